# modeld %postun: on upgrade, restart a running service on the new binary
# (%systemd_postun_with_restart). RPM has no purge: erasing keeps /var/lib/modeld.
[ -d /run/systemd/system ] && systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 1 ] && [ -d /run/systemd/system ]; then
    systemctl try-restart modeld.service >/dev/null 2>&1 || :
fi
exit 0
