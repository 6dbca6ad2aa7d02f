#!/bin/sh
# Run once by the postgres image when it initialises an empty data folder
# (/docker-entrypoint-initdb.d): the login role the hub's services run as. The `migrate` service,
# as the owner, grants it row access to every table and nothing more (0003_auth.sql), so a
# compromised API process cannot change or drop the schema.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v password="$HUB_RUNTIME_DB_PASSWORD" <<'SQL'
CREATE ROLE hub_runtime LOGIN PASSWORD :'password';
SQL
