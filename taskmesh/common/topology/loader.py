"""Reading ``topology.yaml`` from disk: file errors, YAML errors and duplicate keys as problems."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from dataclasses import replace
from pathlib import Path

import yaml
from yaml.nodes import MappingNode

from taskmesh.common.errors import ConfigError
from taskmesh.common.topology.config import Topology
from taskmesh.common.topology.parser import read_topology
from taskmesh.common.topology.values import show

_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_topology(
    path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ
) -> Topology:
    """Read and validate the topology file; ``ConfigError`` lists every problem found.

    ``environ`` is read once, here, for ``TASKMESH_DATABASE_URL`` (it overrides ``ledger.url``).
    A relative ``ledger.data_dir`` is taken relative to the file's directory.
    """
    source = os.fspath(path)
    problems: list[str] = []
    data = _load_yaml(_read_text(Path(source), source), source, problems)
    base_dir = Path(source).absolute().parent
    topology = read_topology(data, problems, environ=environ, base_dir=base_dir)
    if problems:
        raise ConfigError(problems, source)
    return replace(topology, source=source)


def format_problems(error: ConfigError) -> str:
    """One line per problem, each prefixed with the file, for the CLI to print (then exit 2)."""
    where = f"{error.source}: " if error.source else ""
    return "\n".join(where + problem for problem in error.problems)


def _read_text(path: Path, source: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        problem = "file not found"
    except IsADirectoryError:
        problem = "is a directory, expected a YAML file"
    except PermissionError:
        problem = "permission denied"
    except OSError as error:
        problem = f"cannot read the file: {error.strerror or error}"
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        problem = f"line {line}: not UTF-8 text (byte 0x{error.object[error.start]:02x})"
    raise ConfigError([problem], source)


def _load_yaml(text: str, source: str, problems: list[str]) -> object:
    """The YAML document; duplicate keys go to ``problems``, a syntax error raises at once."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        raise ConfigError([_describe_yaml_error(error)], source) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"invalid YAML: {error}"], source) from None
    finally:
        problems.extend(loader.duplicate_keys)
        loader.dispose()


def _describe_yaml_error(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    what = error.problem or error.context or "syntax error"
    if error.context and error.problem and error.problem.startswith("but "):
        what = f"{error.context}, {error.problem}"  # PyYAML splits one sentence in two
    elif error.context and error.problem and error.context_mark:
        what += f" ({error.context} at line {error.context_mark.line + 1})"
    if "'\\t'" in what:
        what += "; indent with spaces, not tabs"
    return f"{where}invalid YAML: {what}"


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that records duplicate mapping keys instead of keeping the last one."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[str] = []

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, object]:
        first_line: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue
            if key in first_line:
                column = key_node.start_mark.column + 1
                self.duplicate_keys.append(
                    f"line {line}, column {column}: duplicate key {show(key)}"
                    f" (first at line {first_line[key]})"
                )
            first_line.setdefault(key, line)
        return super().construct_mapping(node, deep)
