# In the shared schema (pgtenant.target_mode = 'shared', as on a migrate --each
# route), rows carry the tenant's id and row-level security isolates them.
class CreateArItems < ActiveRecord::Migration[6.1]
  def up
    create_table :ar_items do |t|
      t.string :name, null: false
      t.integer :qty, null: false, default: 0
    end
    execute <<~SQL
      DO $$
      BEGIN
          IF current_setting('pgtenant.target_mode', true) = 'shared' THEN
              ALTER TABLE ar_items ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();
              ALTER TABLE ar_items ENABLE ROW LEVEL SECURITY;
              CREATE POLICY tenant_rows ON ar_items
                  USING (tenant_id = (SELECT pgtenant.current_tenant()))
                  WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));
          END IF;
      END
      $$
    SQL
  end

  def down
    drop_table :ar_items
  end
end
