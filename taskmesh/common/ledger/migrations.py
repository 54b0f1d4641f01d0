"""Schema migrations of the ledger: Alembic, configured in code, scripts in the repo's ``db/``.

``db/`` is installed as the ``taskmesh.migrations`` package (see ``setup.py``), so the scripts are
found the same way in a checkout, an editable install and a wheel (e.g. the Docker image).

``upgrade`` and ``downgrade`` are synchronous and run their own event loop (``asyncio.run`` in
``db/env.py``), so they must be called where no loop is running: a CLI command, a plain pytest
fixture, or ``await asyncio.to_thread(upgrade, url)`` from async code.
"""

from __future__ import annotations

import asyncio
import importlib.resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from taskmesh.common.errors import ConfigError
from taskmesh.common.ledger.engine import asyncpg_url, create_engine, translated_errors

MIGRATIONS_PACKAGE = "taskmesh.migrations"
URL_ATTRIBUTE = "taskmesh_database_url"


def script_location() -> Path:
    """The directory of ``env.py`` and ``versions/``: the repo's ``db/``, or its installed copy."""
    try:
        return Path(str(importlib.resources.files(MIGRATIONS_PACKAGE)))
    except ModuleNotFoundError:
        raise ConfigError(
            [f"the {MIGRATIONS_PACKAGE} package is missing: reinstall taskmesh"]
        ) from None


def alembic_config(url: str) -> Config:
    """An Alembic config for the database at ``url`` (a plain ``postgresql://`` URL)."""
    location = script_location()
    if not (location / "env.py").is_file():
        raise ConfigError([f"migration scripts not found in {location}"])
    config = Config()
    config.set_main_option("script_location", str(location))
    # Passed as an attribute, not an ini option: configparser would mangle '%' in passwords.
    config.attributes[URL_ATTRIBUTE] = asyncpg_url(url)
    return config


def _outside_event_loop(action: str) -> None:
    """Refuse to run where an event loop is running: env.py starts its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"migrations.{action}() runs its own event loop; call it from synchronous code "
        "or via asyncio.to_thread()"
    )


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the ledger at ``url`` up to ``revision``."""
    _outside_event_loop("upgrade")
    with translated_errors():
        command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the ledger at ``url`` down to ``revision`` (``base``: drop every table)."""
    _outside_event_loop("downgrade")
    with translated_errors():
        command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest revision of the migration scripts."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://localhost/unused"))
    head = script.get_current_head()
    if head is None:
        raise ConfigError([f"no migration revisions found in {script_location()}"])
    return head


def _revision_of(connection: Connection) -> str | None:
    """The revision stamped in a database (sync side of ``run_sync``)."""
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(url: str) -> str | None:
    """The revision the ledger at ``url`` is at, or None for an empty database."""
    engine = create_engine(url, pool_size=1)
    try:
        with translated_errors():
            async with engine.connect() as connection:
                return await connection.run_sync(_revision_of)
    finally:
        await engine.dispose()
