-- Loader role for the warehouse database, and an optional read-only role for analysts.
-- Run as the warehouse database's owner (or a superuser), connected to the warehouse database:
--
--   psql "$WAREHOUSE_ADMIN_URL" -v ON_ERROR_STOP=1 -f deploy/sql/warehouse_loader.sql
--   psql "$WAREHOUSE_ADMIN_URL" -c '\password warehouse_loader'
--
-- The loader creates and owns the star-schema tables and *_current views in schema public (its
-- migrations run on first load) and owns schema totesys_meta (migrations, load state, check marks). It
-- cannot read or write any table it does not own, and cannot create roles or databases.
-- Re-runnable.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'warehouse_loader') THEN
    -- No password here, so none lands in a script or the server log: set it with \password.
    CREATE ROLE warehouse_loader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION
      CONNECTION LIMIT 10;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'warehouse_reader') THEN
    CREATE ROLE warehouse_reader NOLOGIN;
  END IF;
END
$$;

-- CONNECT, and TEMPORARY for the per-load staging tables. No CREATE on the database: the schema
-- totesys_meta is created below, and the loader's migrations only create it when it is missing.
DO $$
BEGIN
  EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO warehouse_loader', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO warehouse_reader', current_database());
END
$$;

-- Only roles given CREATE may add objects to public (the PostgreSQL 15+ default; needed before 15).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO warehouse_loader;

CREATE SCHEMA IF NOT EXISTS totesys_meta AUTHORIZATION warehouse_loader;
ALTER SCHEMA totesys_meta OWNER TO warehouse_loader;

-- Analysts: read the tables and views the loader creates, now and later; nothing in totesys_meta.
GRANT USAGE ON SCHEMA public TO warehouse_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE warehouse_loader IN SCHEMA public GRANT SELECT ON TABLES TO warehouse_reader;
