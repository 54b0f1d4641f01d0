"""The security keys of the topology: auth, TLS files and worker policies, read and reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from taskmesh.common.errors import ConfigError
from taskmesh.common.model import Executor
from taskmesh.common.topology import (
    AuthConfig,
    ExecutorPolicy,
    TlsConfig,
    load_topology,
    parse_topology,
    topology_to_dict,
)


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_topology(path, environ={})


def problems(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, data)
    return caught.value.problems


@pytest.fixture
def pem_files(tmp_path: Path) -> Path:
    for name in ("ca.pem", "node.pem", "node.key", "tokens"):
        (tmp_path / name).write_text("x\n")
    return tmp_path


def test_security_is_off_by_default() -> None:
    topology = parse_topology({"regions": [{"name": "eu"}]})
    assert topology.master.auth == AuthConfig()
    assert not topology.master.auth.enabled
    assert topology.master.tls is None
    assert topology.regions[0].tls is None
    assert topology.regions[0].workers.tls is None
    assert topology.regions[0].workers.policy == ExecutorPolicy()


def test_paths_are_relative_to_the_file_and_round_trip(pem_files: Path) -> None:
    tls = {"ca": "ca.pem", "cert": "node.pem", "key": "node.key"}
    policy = {
        "executors": ["exec"],
        "commands": ["/bin/echo .*"],
        "run_as": "nobody",
        "env": ["PATH"],
        "output_limit": 1024,
    }
    topology = load(
        pem_files,
        {
            "master": {"auth": {"tokens_file": "tokens"}, "tls": tls},
            "regions": [{"name": "eu", "tls": tls, "workers": {"tls": tls, "policy": policy}}],
        },
    )
    expected_tls = TlsConfig(pem_files / "ca.pem", pem_files / "node.pem", pem_files / "node.key")
    assert topology.master.auth == AuthConfig(tokens_file=pem_files / "tokens")
    assert topology.master.tls == expected_tls
    assert topology.regions[0].tls == expected_tls
    workers = topology.regions[0].workers
    assert workers.tls == expected_tls
    assert workers.policy == ExecutorPolicy(
        executors=(Executor.EXEC,),
        commands=("/bin/echo .*",),
        run_as="nobody",
        env=("PATH",),
        output_limit=1024,
    )
    assert parse_topology(topology_to_dict(topology)) == topology


def test_security_problems_name_their_keys(pem_files: Path) -> None:
    found = problems(
        pem_files,
        {
            "master": {"auth": {"tokens_file": "missing-tokens"}, "tls": {"ca": "ca.pem"}},
            "regions": [
                {
                    "name": "eu",
                    "workers": {
                        "policy": {
                            "executors": ["shell", "docker"],
                            "commands": ["(unclosed"],
                            "env": ["PATH", "NOT A NAME"],
                            "output_limit": 10_000_000,
                        }
                    },
                }
            ],
        },
    )
    assert (
        found[0]
        == 'master.auth.tokens_file: expected the path of an existing file, got "missing-tokens"'
    )
    assert "master.tls.cert: missing; tls needs ca, cert and key (PEM files)" in found
    assert "master.tls.key: missing; tls needs ca, cert and key (PEM files)" in found
    policy = "regions[0].workers.policy"
    assert any(
        p.startswith(
            f'{policy}.executors[1]: expected an executor (shell, exec, noop), got "docker"'
        )
        for p in found
    )
    assert any(p.startswith(f"{policy}.commands[0]: expected a regular expression") for p in found)
    assert any(
        p.startswith(f"{policy}.env[1]: expected an environment variable name") for p in found
    )
    assert f"{policy}.output_limit: expected at most 524288 bytes, got 10000000" in found
