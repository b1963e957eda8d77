# modeld %postun: on upgrade, hand a running service over to the new binary. RPM has no
# purge: erasing keeps /var/lib/modeld.
[ -d /run/systemd/system ] && systemctl daemon-reload >/dev/null 2>&1 || :
# The running daemon is handed over to the new binary (`modeld upgrade`, as the deb's
# postinst does): if the new binary refuses the config or fails to start, the old daemon
# keeps serving on the old binary. A modeld too old to know `upgrade` is restarted after
# the same check.
if [ "$1" -ge 1 ] && [ -d /run/systemd/system ] && systemctl is-active --quiet modeld.service; then
    if ! upgraded=$(/usr/bin/modeld upgrade --socket /run/modeld/admin.sock 2>&1); then
        case "$upgraded" in
        *"malformed admin request"* | *"could not reach modeld"* | *"unrecognized subcommand"*)
            if ! checked=$(/usr/bin/modeld config check --config /etc/modeld/modeld.toml 2>&1); then
                echo "modeld: the new modeld refuses /etc/modeld/modeld.toml; the running daemon keeps serving on the old binary:" >&2
                echo "$checked" >&2
                exit 1
            fi
            systemctl try-restart modeld.service >/dev/null 2>&1 || :
            ;;
        *)
            echo "$upgraded" >&2
            exit 1
            ;;
        esac
    fi
fi
exit 0
