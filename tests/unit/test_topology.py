"""The topology file: the example parses, defaults, the URL override, one message per problem."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from taskmesh.common.errors import ConfigError, NotFoundError
from taskmesh.common.topology import (
    DATABASE_URL_VARIABLE,
    Address,
    BreakerConfig,
    InvalidValue,
    LedgerConfig,
    MasterConfig,
    RegionConfig,
    RetryConfig,
    Topology,
    WorkerPoolConfig,
    dump_topology,
    format_duration,
    format_problems,
    load_topology,
    parse_address,
    parse_duration,
    parse_topology,
    topology_to_dict,
)

EXAMPLE = Path(__file__).parents[2] / "config" / "topology.yaml"
URL = "postgresql://taskmesh:s3cret@db.example:5432/taskmesh"
MASTER_KEYS = (
    "grpc, http, dispatch_interval, region_heartbeat_timeout, max_pending_runs, "
    "shutdown_timeout, breaker, delegation_retry, auth, tls"
)
DURATION_FORMS = '"250ms", "2s", "5m", "1h" or a number of seconds'
REGION_NAME_RULE = 'letters, digits, "-", "_" and "."; at most 63 characters'
QUOTE_HINT = "(YAML reads unquoted yes/no/on/off/true/false as booleans: quote it)"


def problems_of(data: object, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_topology(data, "topology.yaml", environ=environ or {})
    return caught.value.problems


def with_regions(*regions: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"regions": list(regions), **sections}


def load_text(tmp_path: Path, text: str | bytes) -> Topology:
    path = tmp_path / "topology.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return load_topology(path, environ={})


def load_problems(tmp_path: Path, text: str | bytes) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    assert caught.value.source == str(tmp_path / "topology.yaml")
    return caught.value.problems


# --- the example file -------------------------------------------------------------------------


def test_example_file_parses() -> None:
    topology = load_topology(EXAMPLE, environ={})

    assert topology.region_names == ("eu", "us")
    assert topology.source == str(EXAMPLE)
    assert topology.ledger == LedgerConfig(url=None, data_dir=None)
    assert topology.ledger.embedded
    eu, us = topology.regions
    assert eu.fallbacks == ("us",)
    assert us.fallbacks == ("eu",)
    for region in topology.regions:
        assert region.workers.count == 2
        assert region.workers.labels == {"pool": "general"}
    assert eu.workers.slots == 4
    assert us.capacity == 500


def test_example_file_listens_on_free_loopback_ports_only() -> None:
    topology = load_topology(EXAMPLE, environ={})

    addresses = [topology.master.grpc, topology.master.http]
    for region in topology.regions:
        addresses += [region.grpc, region.http, region.workers.http]
    assert all(address == Address("127.0.0.1", 0) for address in addresses)


def test_example_file_documents_every_default() -> None:
    """The example's values are the defaults unless marked "(example)"."""
    topology = load_topology(EXAMPLE, environ={})

    assert topology.master == MasterConfig()
    eu = topology.region("eu")
    assert dataclasses.replace(eu, fallbacks=(), workers=WorkerPoolConfig()) == RegionConfig("eu")
    assert dataclasses.replace(eu.workers, count=1, labels={}) == WorkerPoolConfig()


# --- defaults and accessors -------------------------------------------------------------------


def test_a_region_name_is_all_a_topology_needs() -> None:
    topology = parse_topology({"regions": [{"name": "eu"}]})

    assert topology == Topology(regions=(RegionConfig(name="eu"),))
    assert topology.ledger.url is None
    assert topology.master.grpc == Address("127.0.0.1", 0)
    assert topology.master.dispatch_interval == timedelta(milliseconds=200)
    assert topology.master.region_heartbeat_timeout == timedelta(seconds=10)
    assert topology.master.max_pending_runs == 100_000
    assert topology.master.breaker == BreakerConfig(5, timedelta(seconds=30))
    assert topology.master.delegation_retry == RetryConfig(
        5, timedelta(milliseconds=100), timedelta(seconds=5)
    )
    eu = topology.region("eu")
    assert eu.capacity == 1000
    assert eu.age_step == timedelta(seconds=30)
    assert eu.heartbeat_interval == timedelta(seconds=1)
    assert eu.worker_heartbeat_timeout == timedelta(seconds=5)
    assert eu.lost_run_retries == 3
    assert eu.fallbacks == ()
    assert eu.breakers.worker == BreakerConfig(3, timedelta(seconds=30))
    assert eu.breakers.kind == BreakerConfig(5, timedelta(seconds=60))
    assert eu.workers == WorkerPoolConfig(count=1, slots=4, labels={})


def test_null_sections_read_as_empty() -> None:
    data = {"ledger": None, "master": None, "regions": [{"name": "eu", "workers": None}]}

    assert parse_topology(data) == Topology(regions=(RegionConfig("eu"),))


def test_values_are_converted() -> None:
    data = with_regions(
        {
            "name": "eu",
            "grpc": "[::1]:50051",
            "http": "eu.example.com:8080",
            "age_step": 90,
            "heartbeat_interval": "1m30s",
            "worker_heartbeat_timeout": "2h",
            "workers": {"labels": {"pool": "gpu"}, "heartbeat_interval": 0.5},
        },
        master={"dispatch_interval": "250ms", "region_heartbeat_timeout": "5m"},
    )

    topology = parse_topology(data)

    eu = topology.region("eu")
    assert eu.grpc == Address("::1", 50051)
    assert str(eu.grpc) == "[::1]:50051"
    assert str(eu.http) == "eu.example.com:8080"
    assert eu.age_step == timedelta(seconds=90)
    assert eu.heartbeat_interval == timedelta(seconds=90)
    assert eu.worker_heartbeat_timeout == timedelta(hours=2)
    assert eu.workers.heartbeat_interval == timedelta(milliseconds=500)
    assert eu.workers.labels == {"pool": "gpu"}
    assert topology.master.dispatch_interval == timedelta(milliseconds=250)


def test_region_lookup() -> None:
    topology = parse_topology(with_regions({"name": "eu"}, {"name": "us"}))

    assert topology.region_names == ("eu", "us")
    assert topology.region("us").name == "us"
    with pytest.raises(NotFoundError, match=r'unknown region "mars" \(the topology has: eu, us\)'):
        topology.region("mars")


def test_topology_is_frozen() -> None:
    topology = parse_topology(with_regions({"name": "eu", "workers": {"labels": {"a": "b"}}}))

    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.regions[0].capacity = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        topology.regions[0].workers.labels["a"] = "c"  # type: ignore[index]


def test_worker_http_addresses() -> None:
    free = WorkerPoolConfig(count=2)
    fixed = WorkerPoolConfig(count=3, http=Address("127.0.0.1", 9100))

    assert [free.http_address(i) for i in range(2)] == [Address("127.0.0.1", 0)] * 2
    assert [fixed.http_address(i).port for i in range(3)] == [9100, 9101, 9102]
    with pytest.raises(IndexError):
        fixed.http_address(3)


def test_data_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    topology = load_text(tmp_path, "ledger: {data_dir: pg}\nregions: [{name: eu}]\n")

    assert topology.ledger.data_dir == tmp_path / "pg"
    assert parse_topology({"ledger": {"data_dir": "/var/pg"}, "regions": [{"name": "eu"}]}) == (
        Topology(regions=(RegionConfig("eu"),), ledger=LedgerConfig(data_dir=Path("/var/pg")))
    )


# --- the database URL -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://localhost/taskmesh",
        "postgres://u:p@db:5432/taskmesh",
        "postgresql+asyncpg://u@db/taskmesh?ssl=require",
        "postgresql://",
    ],
)
def test_postgres_urls_are_accepted(url: str) -> None:
    topology = parse_topology({"ledger": {"url": url}, "regions": [{"name": "eu"}]})

    assert topology.ledger.url == url
    assert not topology.ledger.embedded


def test_environment_overrides_the_file_url() -> None:
    data = {"ledger": {"url": "postgresql://file/db"}, "regions": [{"name": "eu"}]}

    assert parse_topology(data, environ={DATABASE_URL_VARIABLE: URL}).ledger.url == URL
    assert parse_topology(data, environ={DATABASE_URL_VARIABLE: ""}).ledger.url == (
        "postgresql://file/db"
    )
    assert parse_topology(data).ledger.url == "postgresql://file/db"


def test_environment_url_without_a_file_url() -> None:
    data = {"regions": [{"name": "eu"}]}

    assert parse_topology(data, environ={DATABASE_URL_VARIABLE: URL}).ledger.url == URL


def test_load_topology_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text("regions: [{name: eu}]\n")
    monkeypatch.setenv(DATABASE_URL_VARIABLE, URL)

    assert load_topology(path).ledger.url == URL
    assert load_topology(path, environ={}).ledger.url is None


def test_a_bad_environment_url_is_a_problem() -> None:
    assert problems_of({"regions": [{"name": "eu"}]}, {DATABASE_URL_VARIABLE: "mysql://x"}) == [
        f"{DATABASE_URL_VARIABLE} (environment variable): expected a postgresql://, postgres:// "
        'or postgresql+asyncpg:// URL, got a "mysql://" URL'
    ]


def test_passwords_stay_out_of_reprs_and_messages() -> None:
    ledger = LedgerConfig(url=URL)

    assert ledger.redacted_url == "postgresql://taskmesh:***@db.example:5432/taskmesh"
    assert "s3cret" not in repr(ledger)
    assert "s3cret" not in repr(Topology(regions=(), ledger=ledger))
    problems = problems_of({"ledger": {"url": "mysql://u:s3cret@db/x"}, "regions": [{"name": "e"}]})
    assert "s3cret" not in problems[0]


# --- one message per problem ------------------------------------------------------------------

PROBLEMS: list[tuple[str, object, str]] = [
    (
        "address without a port",
        with_regions({"name": "eu"}, {"name": "us", "grpc": "eu"}),
        'regions[1].grpc: expected host:port, got "eu"',
    ),
    (
        "negative capacity",
        with_regions({"name": "eu", "capacity": -3}),
        "regions[0].capacity: expected a positive integer, got -3",
    ),
    (
        "duplicate region",
        with_regions({"name": "eu"}, {"name": "eu"}),
        'regions: duplicate region name "eu" (also regions[0])',
    ),
    (
        "unknown key",
        with_regions({"name": "eu"}, master={"bogus": 1}),
        f"master.bogus: unknown key (known keys: {MASTER_KEYS})",
    ),
    (
        "misspelt key",
        with_regions({"name": "eu"}, master={"dispatch_intervall": "1s"}),
        'master.dispatch_intervall: unknown key, did you mean "dispatch_interval"? '
        f"(known keys: {MASTER_KEYS})",
    ),
    (
        "unknown top-level key",
        with_regions({"name": "eu"}, region=[]),
        'region: unknown key, did you mean "regions"? (known keys: ledger, master, regions)',
    ),
    ("no regions key", {}, "regions: at least one region is required"),
    ("empty regions", {"regions": []}, "regions: at least one region is required"),
    ("null document", None, "regions: at least one region is required"),
    (
        "unknown fallback",
        with_regions({"name": "eu", "fallbacks": ["mars"]}),
        'regions[0].fallbacks[0]: unknown region "mars"',
    ),
    (
        "self fallback",
        with_regions({"name": "eu", "fallbacks": ["us", "eu"]}, {"name": "us"}),
        'regions[0].fallbacks[1]: a region cannot fall back to itself ("eu")',
    ),
    (
        "repeated fallback",
        with_regions({"name": "eu", "fallbacks": ["us", "us"]}, {"name": "us"}),
        'regions[0].fallbacks[1]: duplicate fallback "us" (also regions[0].fallbacks[0])',
    ),
    (
        "fallbacks not a list",
        with_regions({"name": "eu", "fallbacks": "us"}, {"name": "us"}),
        'regions[0].fallbacks: expected a list, got "us"',
    ),
    (
        "string for a number",
        with_regions({"name": "eu", "capacity": "10"}),
        'regions[0].capacity: expected a positive integer, got "10"',
    ),
    (
        "float for an integer",
        with_regions({"name": "eu", "workers": {"slots": 2.5}}),
        "regions[0].workers.slots: expected a positive integer, got 2.5",
    ),
    (
        "boolean for an integer",
        with_regions({"name": "eu", "workers": {"count": True}}),
        "regions[0].workers.count: expected an integer of 0 or more, got true",
    ),
    (
        "negative retries",
        with_regions({"name": "eu", "lost_run_retries": -1}),
        "regions[0].lost_run_retries: expected an integer of 0 or more, got -1",
    ),
    (
        "list for a mapping",
        with_regions({"name": "eu"}, master={"breaker": [5, "30s"]}),
        "master.breaker: expected a mapping, got a list",
    ),
    (
        "regions a mapping",
        {"regions": {"eu": {}}},
        "regions: expected a list, got a mapping",
    ),
    (
        "region a string",
        {"regions": ["eu"]},
        'regions[0]: expected a mapping such as {name: eu}, got "eu"',
    ),
    (
        "top level a list",
        [{"name": "eu"}],
        "top level: expected a mapping with keys ledger, master, regions, got a list",
    ),
    (
        "missing name",
        with_regions({"capacity": 5}),
        "regions[0].name: missing; every region needs a name",
    ),
    (
        "bad name",
        with_regions({"name": "e u"}),
        f'regions[0].name: expected a region name ({REGION_NAME_RULE}), got "e u"',
    ),
    (
        "YAML boolean as a name",
        with_regions({"name": False}),
        f"regions[0].name: expected a region name ({REGION_NAME_RULE}), got false {QUOTE_HINT}",
    ),
    (
        "bad duration",
        with_regions({"name": "eu"}, master={"dispatch_interval": "fast"}),
        f'master.dispatch_interval: expected a duration such as {DURATION_FORMS}, got "fast"',
    ),
    (
        "unknown duration unit",
        with_regions({"name": "eu", "age_step": "3 days"}),
        f'regions[0].age_step: expected a duration such as {DURATION_FORMS}, got "3 days"',
    ),
    (
        "zero duration",
        with_regions({"name": "eu", "age_step": 0}),
        "regions[0].age_step: expected a positive duration, got 0",
    ),
    (
        "negative duration",
        with_regions({"name": "eu", "breakers": {"kind": {"reset_timeout": "-1s"}}}),
        'regions[0].breakers.kind.reset_timeout: expected a positive duration, got "-1s"',
    ),
    (
        "null for a number",
        with_regions({"name": "eu", "capacity": None}),
        "regions[0].capacity: expected a positive integer, got null",
    ),
    (
        "label not a string",
        with_regions({"name": "eu", "workers": {"labels": {"gpu": True}}}),
        f"regions[0].workers.labels.gpu: expected a string, got true {QUOTE_HINT}",
    ),
    (
        "unbracketed IPv6",
        with_regions({"name": "eu", "grpc": "::1:50051"}),
        "regions[0].grpc: expected host:port with an IPv6 host in brackets, e.g. [::1]:50051, "
        'got "::1:50051"',
    ),
    (
        "port out of range",
        with_regions({"name": "eu", "http": "127.0.0.1:70000"}),
        'regions[0].http: expected host:port with a port from 0 to 65535, got "127.0.0.1:70000"',
    ),
    (
        "bad host",
        with_regions({"name": "eu"}, master={"http": "300.1.1.1:80"}),
        'master.http: expected host:port with host an IP address or a hostname, got "300.1.1.1:80"',
    ),
    (
        "other database",
        with_regions({"name": "eu"}, ledger={"url": "mysql://db/x"}),
        "ledger.url: expected a postgresql://, postgres:// or postgresql+asyncpg:// URL, "
        'got a "mysql://" URL',
    ),
    (
        "backoffs out of order",
        with_regions({"name": "eu"}, master={"delegation_retry": {"initial_backoff": "10s"}}),
        "master.delegation_retry.initial_backoff: expected at most "
        'master.delegation_retry.max_backoff (5s), got "10s"',
    ),
    (
        "worker heartbeat no faster than its timeout",
        with_regions({"name": "eu", "workers": {"heartbeat_interval": "5s"}}),
        "regions[0].workers.heartbeat_interval: expected less than "
        'regions[0].worker_heartbeat_timeout (5s), got "5s"',
    ),
    (
        "timeout shorter than the default heartbeat",
        with_regions({"name": "eu", "worker_heartbeat_timeout": "500ms"}),
        "regions[0].worker_heartbeat_timeout: expected more than "
        'regions[0].workers.heartbeat_interval (1s), got "500ms"',
    ),
    (
        "region heartbeat no faster than the master's timeout",
        with_regions({"name": "eu", "heartbeat_interval": "1m"}),
        "regions[0].heartbeat_interval: expected less than "
        'master.region_heartbeat_timeout (10s), got "1m"',
    ),
    (
        "one fixed address for two daemons",
        with_regions({"name": "eu", "grpc": "127.0.0.1:7000"}, master={"grpc": "127.0.0.1:7000"}),
        "regions[0].grpc: address 127.0.0.1:7000 is also used by master.grpc",
    ),
    (
        "worker ports beyond 65535",
        with_regions({"name": "eu", "workers": {"http": "127.0.0.1:65535", "count": 2}}),
        "regions[0].workers.http: port 65535 leaves no room for 2 workers "
        "(worker i listens on port + i; use port 0 for free ports)",
    ),
]


@pytest.mark.parametrize(
    ("data", "problem"), [case[1:] for case in PROBLEMS], ids=[case[0] for case in PROBLEMS]
)
def test_each_problem_gets_exactly_one_message(data: object, problem: str) -> None:
    assert problems_of(data) == [problem]


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "master": {"grpc": "nowhere", "bogus": True},
        "regions": [
            {"name": "eu", "capacity": -3, "fallbacks": ["mars"]},
            {"name": "eu", "age_step": "soon"},
            {"name": "us", "workers": {"slots": 0}},
        ],
    }

    assert problems_of(data) == [
        f"master.bogus: unknown key (known keys: {MASTER_KEYS})",
        'master.grpc: expected host:port, got "nowhere"',
        "regions[0].capacity: expected a positive integer, got -3",
        f'regions[1].age_step: expected a duration such as {DURATION_FORMS}, got "soon"',
        'regions: duplicate region name "eu" (also regions[0])',
        "regions[2].workers.slots: expected a positive integer, got 0",
        'regions[0].fallbacks[0]: unknown region "mars"',
    ]


def test_the_error_message_names_the_source() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_topology({"regions": []}, "cluster.yaml")

    assert caught.value.source == "cluster.yaml"
    assert str(caught.value) == "cluster.yaml: regions: at least one region is required"


def test_format_problems_prints_one_line_each() -> None:
    error = ConfigError(["a: wrong", "b: also wrong"], "topology.yaml")

    assert format_problems(error) == "topology.yaml: a: wrong\ntopology.yaml: b: also wrong"
    assert format_problems(ConfigError(["a: wrong"])) == "a: wrong"


# --- the file itself --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as caught:
        load_topology(path, environ={})

    assert caught.value.problems == ["file not found"]
    assert str(caught.value) == f"{path}: file not found"


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_topology(tmp_path, environ={})

    assert caught.value.problems == ["is a directory, expected a YAML file"]


YAML_ERRORS = [
    (
        "bad indentation",
        "regions:\n  - name: eu\n   capacity: 3\n",
        "line 3, column 4: invalid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection at line 2)",
    ),
    (
        "unclosed flow",
        "regions: [{name: eu}\n",
        "line 2, column 1: invalid YAML: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence at line 1)",
    ),
    (
        "stray mapping",
        "a: 1\n  b: 2\n",
        "line 2, column 4: invalid YAML: mapping values are not allowed here",
    ),
    (
        "two documents",
        "regions: [{name: eu}]\n---\nregions: []\n",
        "line 2, column 1: invalid YAML: expected a single document in the stream, "
        "but found another document",
    ),
    (
        "tab",
        "regions:\n\t- name: eu\n",
        "line 2, column 1: invalid YAML: found character '\\t' that cannot start any token; "
        "indent with spaces, not tabs",
    ),
    (
        "undefined alias",
        "regions: *base\n",
        "line 1, column 10: invalid YAML: found undefined alias 'base'",
    ),
]


@pytest.mark.parametrize(
    ("text", "problem"), [case[1:] for case in YAML_ERRORS], ids=[case[0] for case in YAML_ERRORS]
)
def test_yaml_syntax_errors_give_line_and_column(tmp_path: Path, text: str, problem: str) -> None:
    assert load_problems(tmp_path, text) == [problem]


def test_duplicate_keys_are_problems_not_silently_overwritten(tmp_path: Path) -> None:
    text = "regions:\n  - name: eu\n    capacity: 1\n    capacity: 2\n"

    assert load_problems(tmp_path, text) == [
        'line 4, column 5: duplicate key "capacity" (first at line 3)'
    ]


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    text = "regions:\n  - &base {name: eu, capacity: 7}\n  - <<: *base\n    name: us\n"

    assert load_text(tmp_path, text).region("us").capacity == 7


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "- name: eu\n",
            "top level: expected a mapping with keys ledger, master, regions, got a list",
        ),
        (
            "just text\n",
            'top level: expected a mapping with keys ledger, master, regions, got "just text"',
        ),
        ("", "regions: at least one region is required"),
        ("# only comments\n", "regions: at least one region is required"),
    ],
)
def test_a_file_that_is_not_a_mapping(tmp_path: Path, text: str, problem: str) -> None:
    assert load_problems(tmp_path, text) == [problem]


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    assert load_problems(tmp_path, b"regions:\n  - name: \xff\n") == [
        "line 2: not UTF-8 text (byte 0xff)"
    ]


def test_yaml_and_validation_problems_together(tmp_path: Path) -> None:
    text = "master:\n  grpc: x\n  grpc: y\nregions: []\n"

    assert load_problems(tmp_path, text) == [
        'line 3, column 3: duplicate key "grpc" (first at line 2)',
        'master.grpc: expected host:port, got "y"',
        "regions: at least one region is required",
    ]


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "duration"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("2s", timedelta(seconds=2)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5s", timedelta(milliseconds=1500)),
        (" 10s ", timedelta(seconds=10)),
        ("30", timedelta(seconds=30)),
        (2, timedelta(seconds=2)),
        (0.2, timedelta(milliseconds=200)),
    ],
)
def test_durations(raw: object, duration: timedelta) -> None:
    assert parse_duration(raw) == duration


@pytest.mark.parametrize("raw", ["", "s", "5x", "5 s", "1h-5m", "nan", "inf", True, [], None])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(InvalidValue, match="expected a duration such as"):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(milliseconds=200), "200ms"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=2, milliseconds=5), "2h5ms"),
        (timedelta(microseconds=1500), 0.0015),
    ],
)
def test_format_duration_is_the_inverse(duration: timedelta, text: str | float) -> None:
    assert format_duration(duration) == text
    assert parse_duration(text) == duration


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("127.0.0.1:0", Address("127.0.0.1", 0)),
        ("0.0.0.0:50051", Address("0.0.0.0", 50051)),
        ("localhost:65535", Address("localhost", 65535)),
        ("region-eu.internal:8080", Address("region-eu.internal", 8080)),
        ("[::1]:50051", Address("::1", 50051)),
        ("[::]:0", Address("::", 0)),
    ],
)
def test_addresses(raw: str, address: Address) -> None:
    assert parse_address(raw) == address
    assert str(address) == raw


@pytest.mark.parametrize(
    "raw",
    [":80", "host", "host:", "host:-1", "host:http", "[::1]", "[nothost]:80", "a_b:80", "1.2.3:80"],
)
def test_bad_addresses(raw: str) -> None:
    with pytest.raises(InvalidValue, match=r"^expected host:port"):
        parse_address(raw)


def test_address_with_port() -> None:
    assert Address("::1", 0).with_port(4000) == Address("::1", 4000)
    assert Address("::1", 0).picks_free_port
    assert not Address("::1", 4000).picks_free_port


# --- back to the file's shape -----------------------------------------------------------------


def test_round_trip_through_the_file_shape() -> None:
    """E.g. ``taskmesh up`` handing its children a topology with the bound ports filled in."""
    topology = load_topology(EXAMPLE, environ={DATABASE_URL_VARIABLE: URL})
    eu, us = topology.regions
    resolved = dataclasses.replace(
        topology, regions=(dataclasses.replace(eu, grpc=eu.grpc.with_port(41000)), us)
    )

    assert parse_topology(topology_to_dict(resolved, with_ledger_url=True)) == resolved


def test_the_dump_leaves_the_database_url_out_by_default() -> None:
    topology = load_topology(EXAMPLE, environ={DATABASE_URL_VARIABLE: URL})

    assert topology_to_dict(topology)["ledger"] == {"url": None, "data_dir": None}
    assert "s3cret" not in dump_topology(topology)
    assert URL in dump_topology(topology, with_ledger_url=True)
    assert parse_topology(topology_to_dict(topology)) == dataclasses.replace(
        topology, ledger=LedgerConfig()
    )
