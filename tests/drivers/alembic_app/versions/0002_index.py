"""index on name"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("sa_items_name", "sa_items", ["name"])


def downgrade():
    op.drop_index("sa_items_name", table_name="sa_items")
