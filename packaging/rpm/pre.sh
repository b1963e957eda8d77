# modeld %pre: the modeld system user and group.
getent group modeld >/dev/null || groupadd --system modeld
getent passwd modeld >/dev/null || useradd --system --gid modeld --home-dir /var/lib/modeld \
    --no-create-home --shell /sbin/nologin --comment "modeld model serving daemon" modeld
exit 0
