"""setuptools: everything is in setup.cfg except the package list, which it cannot say.

The Alembic migrations live in the repository's top-level ``db/`` (the project's layout), yet an
installed wheel (the Docker image) must carry them: setup.cfg maps ``db/`` to the package
``taskmesh.migrations``, and ``packages = find:`` cannot list a package outside ``taskmesh/``.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["taskmesh", "taskmesh.*"]), "taskmesh.migrations"])
