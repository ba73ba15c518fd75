"""users.totp_secret holds the sealed secret (AES-GCM, voxa.security.secretbox): wider

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 15:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.alter_column('totp_secret', type_=sa.String(255), existing_type=sa.String(64), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.alter_column('totp_secret', type_=sa.String(64), existing_type=sa.String(255), existing_nullable=True)
