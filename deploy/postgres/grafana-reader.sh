#!/bin/sh
# Runs once, when the postgres service initialises an empty data volume
# (docker-entrypoint-initdb.d): a login for Grafana's PostgreSQL data source
# that may read the subscriber's tables and nothing else. The subscriber
# creates its tables later, as POSTGRES_USER; the default privileges give
# the reader SELECT on each of them.
#
# A volume initialised before this script existed has no such role: create
# it once by hand (see docs/docker.md).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'password';
GRANT CONNECT ON DATABASE messages TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
