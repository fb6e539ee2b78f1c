-- Run by the postgres image once, on the first start with an empty data volume
-- (docker-entrypoint-initdb.d): one server, one database per service.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;

-- Prefect's server needs the pg_trgm extension; created here, as the superuser, so its migrations
-- do not depend on the rights of the role it connects with.
\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
