"""peer accounts: the account whose patient-level access applies to a DICOM peer

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 07:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('peers') as batch:
        batch.add_column(sa.Column('account', sa.String(length=64), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('peers') as batch:
        batch.drop_column('account')
