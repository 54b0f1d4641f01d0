"""The ledger's Alembic migrations, shipped inside the package as ``taskmesh.migrations``.

The scripts live here, in the repository's top-level ``db/``; ``setup.py`` maps this directory to
the ``taskmesh.migrations`` package, so an installed wheel (a Docker image, a venv) carries them
and ``taskmesh db upgrade`` finds them with ``importlib.resources``, editable install or not.
"""
