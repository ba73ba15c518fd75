"""measurements: each user's measurements and annotations of a study

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 09:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('measurements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_fk', sa.Integer(), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('frame_number', sa.Integer(), nullable=True),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('label', sa.String(length=1024), nullable=False),
    sa.Column('tracking_uid', sa.String(length=64), nullable=False),
    sa.Column('graphic_json', sa.Text(), nullable=False),
    sa.Column('values_json', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_fk'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tracking_uid')
    )
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_measurements_study_fk'), ['study_fk'], unique=False)
        batch_op.create_index('ix_measurements_study_user', ['study_instance_uid', 'username'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.drop_index('ix_measurements_study_user')
        batch_op.drop_index(batch_op.f('ix_measurements_study_fk'))

    op.drop_table('measurements')
