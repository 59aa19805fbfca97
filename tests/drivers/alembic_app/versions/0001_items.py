"""items"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# In the shared schema (pgtenant.target_mode = 'shared', as on a migrate --each
# route), rows carry the tenant's id and row-level security isolates them.
SHARED_RLS = """
DO $$
BEGIN
    IF current_setting('pgtenant.target_mode', true) = 'shared' THEN
        ALTER TABLE sa_items ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();
        ALTER TABLE sa_items ENABLE ROW LEVEL SECURITY;
        CREATE POLICY tenant_rows ON sa_items
            USING (tenant_id = (SELECT pgtenant.current_tenant()))
            WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));
    END IF;
END
$$
"""


def upgrade():
    op.create_table(
        "sa_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False, server_default="0"),
    )
    op.execute(SHARED_RLS)


def downgrade():
    op.drop_table("sa_items")
