"""Alembic migrations of the audit database (run by ``service.database.upgrade``)."""
