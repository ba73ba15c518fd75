"""web_sessions.oidc_id_token: the ID token a single sign-on session began with, sent back to the
provider as id_token_hint when the user signs out (OpenID Connect RP-Initiated Logout)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 15:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('web_sessions') as batch:
        batch.add_column(sa.Column('oidc_id_token', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('web_sessions') as batch:
        batch.drop_column('oidc_id_token')
