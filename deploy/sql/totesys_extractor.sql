-- Read-only extraction role for the totesys source database.
-- Run as the owner of the totesys tables (or a superuser), connected to the totesys database:
--
--   psql "$TOTESYS_ADMIN_URL" -v ON_ERROR_STOP=1 -f deploy/sql/totesys_extractor.sql
--   psql "$TOTESYS_ADMIN_URL" -c '\password totesys_extractor'
--
-- The role may read the 11 contract tables and nothing else (not _prisma_migrations, not other
-- schemas), and may not write anywhere. It also reads pg_stat_user_tables (the new-data sensor) and
-- the system catalogs (schema validation), which every role can read by default. Re-runnable.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'totesys_extractor') THEN
    -- No password here, so none lands in a script or the server log: set it with \password.
    CREATE ROLE totesys_extractor LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION
      CONNECTION LIMIT 10;
  END IF;
END
$$;

-- Belt and braces: every transaction of the role is read-only unless it explicitly asks otherwise,
-- and a runaway query is cut off.
ALTER ROLE totesys_extractor SET default_transaction_read_only = on;
ALTER ROLE totesys_extractor SET statement_timeout = '30min';

DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO totesys_extractor', current_database());
END
$$;

-- PostgreSQL < 15 lets every role create objects in schema public; take that away (15+ default).
-- The table owner keeps its rights; check no other application role relied on PUBLIC's CREATE.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

GRANT USAGE ON SCHEMA public TO totesys_extractor;
GRANT SELECT ON TABLE
  public.address, public.counterparty, public.currency, public.department, public.design,
  public.payment, public.payment_type, public.purchase_order, public.sales_order, public.staff,
  public.transaction
TO totesys_extractor;
