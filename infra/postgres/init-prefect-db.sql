-- Runs once, when the Postgres volume is first created (docker-entrypoint-initdb.d): the Prefect
-- server keeps its own state in a database of its own, beside foldem's audit trail.
CREATE DATABASE prefect;
