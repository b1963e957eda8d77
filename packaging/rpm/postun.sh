# modeld %postun: on upgrade, restart a running service on the new binary
# (%systemd_postun_with_restart). RPM has no purge: erasing keeps /var/lib/modeld.
[ -d /run/systemd/system ] && systemctl daemon-reload >/dev/null 2>&1 || :
# The new binary checks the config in force first: if it refuses it, the running daemon
# is left serving on the old binary (the deb's postinst does the same).
if [ "$1" -ge 1 ] && [ -d /run/systemd/system ]; then
    if systemctl is-active --quiet modeld.service &&
        ! checked=$(/usr/bin/modeld config check --config /etc/modeld/modeld.toml 2>&1); then
        echo "modeld: the new modeld refuses /etc/modeld/modeld.toml; the running daemon keeps serving on the old binary:" >&2
        echo "$checked" >&2
        exit 1
    fi
    systemctl try-restart modeld.service >/dev/null 2>&1 || :
fi
exit 0
