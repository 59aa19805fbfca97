-- In the shared schema (pgtenant.target_mode = 'shared', as on a migrate --each
-- route), rows carry the tenant's id and row-level security isolates them.
CREATE TABLE sx_items (id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL DEFAULT 0);
DO $$
BEGIN
    IF current_setting('pgtenant.target_mode', true) = 'shared' THEN
        ALTER TABLE sx_items ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();
        ALTER TABLE sx_items ENABLE ROW LEVEL SECURITY;
        CREATE POLICY tenant_rows ON sx_items
            USING (tenant_id = (SELECT pgtenant.current_tenant()))
            WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));
    END IF;
END
$$;
