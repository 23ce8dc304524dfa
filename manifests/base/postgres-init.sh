#!/bin/sh
# Runs once, when the Postgres volume is empty (the image's /docker-entrypoint-initdb.d), as the superuser whose
# password stays in the Postgres pod (actionclip-postgres-superuser). Creates the one role MLflow logs in as
# (actionclip-mlflow-db: PGUSER/PGPASSWORD) and the two databases it owns: the tracking/registry store and the
# basic-auth user store. The role is no superuser and cannot create roles or databases.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v role="$MLFLOW_DB_USER" -v pw="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'pw' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
CREATE DATABASE mlflow OWNER :"role";
CREATE DATABASE mlflow_auth OWNER :"role";
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow_auth FROM PUBLIC;
SQL
