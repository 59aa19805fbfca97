-- Row-level security for shared-table (free-tier) tenants: the RLS pattern.
--
-- pgtenant runs every migration with `pgtenant.target_mode` set to 'schema',
-- 'database' or 'shared'. Only the shared schema gets a tenant_id column and
-- policies; dedicated schemas and databases keep plain tables.
--
-- pgtenant.current_tenant() (installed by pgtenant) returns the id of the
-- tenant pgtenant signed for this server backend, and NULL for anything else:
-- a client that sets pgtenant.tenant_id itself, by whatever SQL, matches no row
-- and can insert none. Wrapping it in (SELECT ...) evaluates it once per query
-- instead of once per row.
DO $$
BEGIN
    IF current_setting('pgtenant.target_mode', true) IS DISTINCT FROM 'shared' THEN
        RETURN;
    END IF;

    ALTER TABLE customers
        ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();
    ALTER TABLE customers ADD UNIQUE (tenant_id, id);
    ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_rows ON customers
        USING (tenant_id = (SELECT pgtenant.current_tenant()))
        WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));

    ALTER TABLE orders
        ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();
    -- An order may only point at a customer of the same tenant. The
    -- single-column key from 002 goes: it would check other tenants' ids
    -- first and so tell a tenant which of them exist.
    ALTER TABLE orders ADD FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, id);
    ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_customer_id_fkey;
    CREATE INDEX ON orders (tenant_id);
    ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_rows ON orders
        USING (tenant_id = (SELECT pgtenant.current_tenant()))
        WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));
END
$$;
