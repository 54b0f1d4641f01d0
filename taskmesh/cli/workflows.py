"""``taskmesh workflow submit FILE.yaml``: a DAG of tasks from a YAML file, all or nothing.

The file has the shape of the REST body of ``POST /v1/workflows``: an optional ``name`` and a
list of ``tasks``, each a task spec (``name``, ``command``, ``priority``, ``timeout: 30s``,
``retry``...) with an optional ``local_name`` (default: its ``name``) and ``depends_on`` (local
names). Every error names the file and the field path, e.g. ``tasks[2].depends_on[0]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from taskmesh.cli.shared import add_master_options, master_client
from taskmesh.common.command_line import EXIT_OK
from taskmesh.common.errors import TaskmeshError, ValidationError
from taskmesh.common.model import WorkflowTask
from taskmesh.master.task_json import workflow_field, workflow_from_json

if TYPE_CHECKING:
    from taskmesh.cli.shared import Subcommands


def add_workflow_commands(commands: Subcommands) -> None:
    """Register ``workflow submit``."""
    workflow = commands.add_parser("workflow", help="submit a workflow (a DAG of tasks)")
    actions = workflow.add_subparsers(dest="action", metavar="ACTION", required=True)
    submit = actions.add_parser("submit", help="submit the tasks of a YAML file; prints ids")
    submit.add_argument("file", type=Path, help="YAML file: name, tasks (with depends_on)")
    submit.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_master_options(submit)
    submit.set_defaults(handler=submit_workflow)


def read_workflow(path: Path) -> tuple[str, list[WorkflowTask]]:
    """The name and tasks of a workflow file; a ``ValidationError`` names the field."""
    try:
        body = yaml.safe_load(path.read_text())
    except OSError as error:
        raise TaskmeshError(f"{path}: cannot read it: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise TaskmeshError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(body, dict):
        raise TaskmeshError(f"{path}: expected a mapping with 'name' and 'tasks'")
    try:
        return workflow_from_json(body)
    except ValidationError as error:
        raise TaskmeshError(f"{path}: {error}") from None


def submit_workflow(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Submit a workflow file; print the workflow id and each task's id by local name."""
    path: Path = args.file
    name, tasks = read_workflow(path)
    with master_client(args, env) as client:
        try:
            submitted = client.submit_workflow(tasks, name or path.stem)
        except ValidationError as error:
            raise TaskmeshError(f"{path}: {workflow_field(error.field)}: {error.message}") from None
    ids = {local: str(task.id) for local, task in submitted.tasks.items()}
    if args.json:
        print(json.dumps({"workflow_id": str(submitted.workflow_id), "task_ids": ids}, indent=2))
        return EXIT_OK
    print(f"workflow {submitted.workflow_id}")
    for local, task_id in ids.items():
        print(f"{task_id}  {local}")
    return EXIT_OK
