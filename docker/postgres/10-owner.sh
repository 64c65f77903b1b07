#!/usr/bin/env bash
# Postgres container init (docker-entrypoint-initdb.d; runs once, on an empty data directory):
# creates the role that owns the warehouse. It may create roles (for `vaultctl migrate` to
# create each service's role) but is no superuser; it owns the database, so it may create the
# schemas and, on Postgres 15+, tables in `public` (diesel's bookkeeping table).
#
# Reads VAULTLINE_OWNER_USER and VAULTLINE_OWNER_PASSWORD (docker/compose.yaml passes them from
# .env: PG_OWNER_USER, PG_OWNER_PASSWORD), POSTGRES_USER and POSTGRES_DB.
set -euo pipefail

psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner="${VAULTLINE_OWNER_USER:?}" -v password="${VAULTLINE_OWNER_PASSWORD:?}" \
  -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"owner" LOGIN CREATEROLE PASSWORD :'password';
ALTER DATABASE :"db" OWNER TO :"owner";
SQL
