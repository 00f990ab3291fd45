"""The service's own tables (beside Optuna's), SQLAlchemy 2.0 typed models, migrated by Alembic."""
