#!/usr/bin/env bash
# Postgres container init (docker-entrypoint-initdb.d; runs once, on an empty data directory):
# includes the warehouse's settings (docker/postgres/warehouse.conf, mounted by
# docker/compose.yaml) in the server's configuration; the entrypoint's final start reads them.
set -euo pipefail

printf "include '/etc/vaultline/warehouse.conf'\n" >>"$PGDATA/postgresql.conf"
