#!/bin/bash
# Creates one database per Lyceum service. PostgreSQL's image runs this once, when its data
# volume is empty; every future service's database is created up front so that adding a
# service later needs no re-initialisation (`docker compose down -v` starts afresh).
set -euo pipefail

for name in ${LYCEUM_DATABASES:-lyceum_auth lyceum_users lyceum_chat lyceum_courses lyceum_documents lyceum_webhooks}; do
    if [ "$(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != "1" ]; then
        echo "creating database $name"
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -c "CREATE DATABASE \"$name\""
    fi
done
