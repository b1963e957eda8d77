# modeld %post: ownership of its state; on first install, enable per the system preset
# (as %systemd_post does), then reload systemd's view of units.
chown -R modeld:modeld /var/lib/modeld
chown root:modeld /etc/modeld /etc/modeld/modeld.toml
chmod 0750 /etc/modeld
chmod 0640 /etc/modeld/modeld.toml
if [ "$1" -eq 1 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload preset modeld.socket modeld.service >/dev/null 2>&1 || :
fi
[ -d /run/systemd/system ] && systemctl daemon-reload >/dev/null 2>&1 || :
exit 0
