"""Alembic environment of the taskmesh ledger: asyncpg, driven by ``asyncio.run``.

Run through ``taskmesh.common.ledger.migrations`` (which passes the URL in code), or with the
Alembic CLI: ``alembic -c db/alembic.ini -x url=postgresql://... upgrade head``.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine

from taskmesh.common.ledger.engine import asyncpg_url
from taskmesh.common.ledger.migrations import URL_ATTRIBUTE
from taskmesh.common.ledger.schema import metadata

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> URL:
    """The URL handed over in code, on the command line (``-x url=``), or in the ini file."""
    given = config.attributes.get(URL_ATTRIBUTE)
    if given is not None:
        return asyncpg_url(given)
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass -x url=postgresql://user@host/db")
    return asyncpg_url(url)


def run_migrations_offline() -> None:
    """Emit the migration SQL as a script (``alembic upgrade --sql``)."""
    context.configure(
        url=database_url().set(drivername="postgresql"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection) -> None:
    """Run the migrations on one connection, in one transaction."""
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    """Connect with asyncpg and run the migrations through ``run_sync``."""
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
