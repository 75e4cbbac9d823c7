#!/bin/sh
# First start: schema, admin user and roles into the superset-home volume; every start: the web server.
# The password comes from the environment (set by `rtca --backend docker up`); nothing here writes it to a file.
set -eu
marker=/app/superset_home/.initialized-6.1.0
if [ ! -f "$marker" ]; then
    superset db upgrade
    superset fab create-admin --username "${SUPERSET_ADMIN_USER:-admin}" --firstname Admin --lastname Workbench \
        --email admin@localhost --password "$SUPERSET_ADMIN_PASSWORD"
    superset init
    touch "$marker"
fi
exec gunicorn --bind "0.0.0.0:${SUPERSET_PORT:-8088}" --workers 1 --worker-class gthread --threads 8 \
    --timeout 120 --access-logfile - "superset.app:create_app()"
