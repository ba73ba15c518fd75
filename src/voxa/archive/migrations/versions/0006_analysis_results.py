"""analysis_results: analysis runs (calcium, cardiac, vessels, measure), their results and review

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('analysis_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('tool', sa.String(length=32), nullable=False),
    sa.Column('study_fk', sa.Integer(), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_json', sa.Text(), nullable=False),
    sa.Column('parameters_json', sa.Text(), nullable=False),
    sa.Column('algorithm_version', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('result_json', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('requires_review', sa.Boolean(), nullable=False),
    sa.Column('verified_by', sa.String(length=64), nullable=True),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outputs_json', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['study_fk'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('analysis_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_analysis_results_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_analysis_results_study_fk'), ['study_fk'], unique=False)
        batch_op.create_index('ix_analysis_results_study', ['study_instance_uid', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('analysis_results', schema=None) as batch_op:
        batch_op.drop_index('ix_analysis_results_study')
        batch_op.drop_index(batch_op.f('ix_analysis_results_study_fk'))
        batch_op.drop_index(batch_op.f('ix_analysis_results_job_id'))

    op.drop_table('analysis_results')
