from django.db import migrations, models

# In the shared schema (pgtenant.target_mode = 'shared', as on a migrate --each
# route), rows carry the tenant's id and row-level security isolates them.
SHARED_RLS = """
DO $$
BEGIN
    IF current_setting('pgtenant.target_mode', true) = 'shared' THEN
        ALTER TABLE django_shop_item ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();
        ALTER TABLE django_shop_item ENABLE ROW LEVEL SECURITY;
        CREATE POLICY tenant_rows ON django_shop_item
            USING (tenant_id = (SELECT pgtenant.current_tenant()))
            WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));
    END IF;
END
$$
"""


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("qty", models.IntegerField(default=0)),
            ],
        ),
        migrations.RunSQL(SHARED_RLS, reverse_sql=migrations.RunSQL.noop),
    ]
