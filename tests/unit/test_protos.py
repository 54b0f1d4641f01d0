"""The wire contract: generated code in sync with the .proto sources, carrying the model."""

from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import EnumDescriptor, FileDescriptor
from google.protobuf.message import Message

from taskmesh.common import model
from taskmesh.common.errors import ValidationError
from taskmesh.common.rpc import (
    cluster,
    cluster_pb2,
    region_pb2,
    region_pb2_grpc,
    run_pb2,
    runs,
    scheduler_pb2,
    task_pb2,
    tasks,
)

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / "protos" / "generate.py"
RPC_PACKAGE = REPO / "taskmesh" / "common" / "rpc"
PROTO_FILES = (task_pb2, run_pb2, cluster_pb2, scheduler_pb2, region_pb2)
M = TypeVar("M", bound=Message)
T0 = datetime(2025, 3, 30, 1, 30, 15, 123456, tzinfo=UTC)


def generated_files(directory: Path) -> dict[str, bytes]:
    """The generator's outputs in ``directory`` by name (hand-written modules excluded)."""
    return {
        path.name: path.read_bytes()
        for path in sorted(directory.iterdir())
        if path.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"))
    }


# ---- (a) the committed code is what the generator makes of the sources ----


def test_generated_code_matches_the_proto_sources(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh, committed = generated_files(tmp_path), generated_files(RPC_PACKAGE)
    hint = "generated protobuf code is out of date: run `make protos` and commit the result"
    assert sorted(committed) == sorted(fresh), f"{hint} (files differ)"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{hint} (stale: {', '.join(stale)})"


def test_generator_output_is_deterministic(tmp_path: Path) -> None:
    outputs = []
    for name in ("one", "two"):
        out = tmp_path / name
        subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)], check=True)
        outputs.append(generated_files(out))
    assert outputs[0] == outputs[1]


def test_generator_removes_stale_modules_and_keeps_hand_written_ones(tmp_path: Path) -> None:
    (tmp_path / "gone_pb2.py").write_text("# from a deleted .proto\n")
    (tmp_path / "values.py").write_text("# hand-written\n")
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], check=True)
    assert not (tmp_path / "gone_pb2.py").exists()
    assert (tmp_path / "values.py").read_text() == "# hand-written\n"


# ---- (b) the messages carry the model ----


def roundtrip(message: M) -> M:
    """Serialise and parse a message, as the wire does."""
    parsed = type(message)()
    parsed.ParseFromString(message.SerializeToString())
    assert parsed == message
    return parsed


SCHEDULES: list[model.Schedule | None] = [
    None,
    model.AtSchedule(at=T0),
    model.CronSchedule(
        expression="*/5 * * * *",
        timezone="Europe/Paris",
        misfire=model.MisfirePolicy.ALL,
        overlap=model.OverlapPolicy.FORBID,
    ),
    model.CronSchedule(expression="0 3 * * *"),
    model.IntervalSchedule(
        every=timedelta(minutes=90, microseconds=5),
        start_at=T0,
        misfire=model.MisfirePolicy.NONE,
        overlap=model.OverlapPolicy.REPLACE,
    ),
    model.IntervalSchedule(every=timedelta(seconds=30)),
]


def full_spec(schedule: model.Schedule | None) -> model.TaskSpec:
    """A task spec with no field left at its default."""
    return model.TaskSpec(
        name="nightly-report",
        command="/usr/bin/report",
        executor=model.Executor.EXEC,
        args=("--since", "yesterday"),
        description="builds the report",
        schedule=schedule,
        priority=-1000,
        region="eu-west",
        placement=model.Placement.STRICT,
        kind="reports",
        timeout=timedelta(minutes=10),
        schedule_to_start_timeout=timedelta(seconds=45, milliseconds=500),
        retry=model.RetryPolicy(
            max_attempts=4,
            initial_backoff=timedelta(milliseconds=250),
            max_backoff=timedelta(minutes=2),
            multiplier=1.5,
            retry_on=frozenset({model.RunState.FAILED, model.RunState.LOST}),
        ),
        dependencies=(uuid4(), uuid4()),
        idempotency_key="report-2025-03-30",
        labels={"team": "data", "tier": "batch"},
    )


def full_run() -> model.Run:
    """A finished run attempt with every timestamp and optional field set."""
    return model.Run(
        id=uuid4(),
        task_id=uuid4(),
        attempt=3,
        state=model.RunState.FAILED,
        epoch=2**40,
        priority=1000,
        due_at=T0,
        created_at=T0 - timedelta(hours=1),
        region="eu-west",
        worker_id="host-7/2",
        delegated_at=T0 + timedelta(seconds=1),
        assigned_at=T0 + timedelta(seconds=2),
        started_at=T0 + timedelta(seconds=3),
        finished_at=T0 + timedelta(seconds=4),
        exit_code=0,  # zero must survive as "exited 0", not as "no exit code"
        output_tail="line 1\nline 2 ✓\n",
        error="boom",
        ready_at=T0 + timedelta(milliseconds=500),
    )


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_task_with_every_field_set_survives_the_wire(schedule: model.Schedule | None) -> None:
    task = model.Task(
        id=uuid4(), spec=full_spec(schedule), created_at=T0, workflow_id=uuid4(), paused=True
    )
    assert tasks.task_from_proto(roundtrip(tasks.task_to_proto(task))) == task


def test_task_with_defaults_survives_the_wire() -> None:
    task = model.Task(id=uuid4(), spec=model.TaskSpec(name="n", command="true"), created_at=T0)
    message = roundtrip(tasks.task_to_proto(task))
    assert not message.spec.HasField("schedule")
    assert not message.spec.HasField("region")
    assert not message.HasField("workflow_id")
    assert tasks.task_from_proto(message) == task


def test_unset_wire_fields_decode_to_the_model_defaults() -> None:
    assert tasks.task_spec_from_proto(task_pb2.TaskSpec()) == model.TaskSpec(name="", command="")
    cron = task_pb2.Schedule(cron=task_pb2.CronSchedule(expression="* * * * *"))
    assert tasks.schedule_from_proto(cron) == model.CronSchedule(expression="* * * * *")


def test_run_with_every_timestamp_survives_the_wire() -> None:
    run = full_run()
    message = roundtrip(runs.run_to_proto(run))
    assert message.HasField("exit_code")
    assert runs.run_from_proto(message) == run


def test_pending_run_has_no_optional_fields_on_the_wire() -> None:
    run = model.Run(
        id=uuid4(),
        task_id=uuid4(),
        attempt=1,
        state=model.RunState.PENDING,
        epoch=0,
        priority=0,
        due_at=T0,
        created_at=T0,
    )
    message = roundtrip(runs.run_to_proto(run))
    optional = ("region", "worker_id", "delegated_at", "assigned_at", "started_at")
    for name in (*optional, "finished_at", "exit_code", "ready_at"):
        assert not message.HasField(name), name
    assert runs.run_from_proto(message) == run


@pytest.mark.parametrize("latest_run", [None, full_run()], ids=["no-run", "with-run"])
def test_task_status_survives_the_wire(latest_run: model.Run | None) -> None:
    task = model.Task(id=uuid4(), spec=full_spec(None), created_at=T0)
    status = model.TaskStatus(task=task, latest_run=latest_run)
    message = roundtrip(tasks.task_status_to_proto(status))
    assert tasks.task_status_from_proto(message) == status


@pytest.mark.parametrize("fired", [False, True], ids=["never-fired", "fired"])
def test_scheduled_task_survives_the_wire(fired: bool) -> None:
    task = model.Task(id=uuid4(), spec=full_spec(model.CronSchedule("0 3 * * *")), created_at=T0)
    fires = (T0 + timedelta(hours=3), T0 + timedelta(hours=27))
    item = model.ScheduledTask(task, T0 if fired else None, fires if fired else ())
    message = roundtrip(tasks.scheduled_task_to_proto(item))
    assert tasks.scheduled_task_from_proto(message) == item


def test_claimed_run_survives_the_wire() -> None:
    claimed = model.ClaimedRun(
        run_id=uuid4(),
        task_id=uuid4(),
        task_name="nightly-report",
        attempt=2,
        epoch=7,
        priority=-5,
        region="eu-west",
        due_at=T0,
        delegated_at=T0 + timedelta(seconds=1),
        command="/usr/bin/report",
        executor=model.Executor.EXEC,
        args=("--since", "yesterday"),
        kind="reports",
        placement=model.Placement.STRICT,
        timeout=timedelta(minutes=10),
        schedule_to_start_timeout=timedelta(seconds=30),
        labels={"team": "data"},
    )
    batch = roundtrip(region_pb2.DelegateRequest(runs=[runs.claimed_run_to_proto(claimed)]))
    assert [runs.claimed_run_from_proto(run) for run in batch.runs] == [claimed]


@pytest.mark.parametrize("from_state", [None, model.RunState.RUNNING], ids=str)
def test_run_event_survives_the_wire(from_state: model.RunState | None) -> None:
    event = model.RunEvent(
        id=2**33,
        at=T0,
        run_id=uuid4(),
        task_id=uuid4(),
        attempt=1,
        from_state=from_state,
        to_state=model.RunState.SUCCEEDED,
        epoch=3,
        region="eu-west",
        worker_id="w1",
        detail={"exit_code": 0, "error": "", "signals": ["TERM"], "extra": {"ok": True}},
    )
    batch = roundtrip(scheduler_pb2.WatchEventsResponse(events=[runs.run_event_to_proto(event)]))
    assert [runs.run_event_from_proto(e) for e in batch.events] == [event]


def test_ledger_region_and_worker_survive_the_wire() -> None:
    region = model.Region(
        name="eu-west",
        address="10.0.0.1:7001",
        credit=40,
        heartbeat_at=T0,
        state=model.RegionState.DRAINING,
    )
    worker = model.Worker(
        id="host-7/2",
        region="eu-west",
        slots=8,
        heartbeat_at=T0,
        labels={"zone": "b"},
        state=model.WorkerState.DOWN,
    )
    status = cluster.region_to_proto(region)
    status.workers.append(cluster.worker_to_proto(worker))
    status.queue_depth = 12  # a live figure the model does not hold
    message = roundtrip(status)
    assert cluster.region_from_proto(message) == region
    assert [cluster.worker_from_proto(w) for w in message.workers] == [worker]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (run_pb2.Run(id="not-a-uuid", task_id=str(uuid4()), state=2), "id"),
        (run_pb2.Run(id=str(uuid4()), task_id=str(uuid4())), "state"),
        (run_pb2.Run(id=str(uuid4()), task_id=str(uuid4()), state=99), "state"),
    ],
    ids=["bad-id", "no-state", "unknown-state"],
)
def test_malformed_run_is_a_validation_error(message: run_pb2.Run, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        runs.run_from_proto(message)
    assert caught.value.field == field


def test_at_schedule_without_its_instant_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        tasks.schedule_from_proto(task_pb2.Schedule(at=task_pb2.AtSchedule()))


# Each model type and the message that carries it; True: one to one, False: the message adds
# live figures the model does not hold.
MODEL_MESSAGES = [
    (model.TaskSpec, task_pb2.TaskSpec, True),
    (model.Task, task_pb2.Task, True),
    (model.RetryPolicy, task_pb2.RetryPolicy, True),
    (model.AtSchedule, task_pb2.AtSchedule, True),
    (model.CronSchedule, task_pb2.CronSchedule, True),
    (model.IntervalSchedule, task_pb2.IntervalSchedule, True),
    (model.Run, run_pb2.Run, True),
    (model.RunEvent, run_pb2.RunEvent, True),
    (model.ClaimedRun, region_pb2.ClaimedRun, True),
    (model.TaskStatus, scheduler_pb2.TaskStatus, True),
    (model.ScheduledTask, scheduler_pb2.ScheduledTask, True),
    (model.Region, cluster_pb2.RegionStatus, False),
    (model.Worker, cluster_pb2.WorkerStatus, False),
]


@pytest.mark.parametrize(
    ("cls", "message", "exact"), MODEL_MESSAGES, ids=[m[0].__name__ for m in MODEL_MESSAGES]
)
def test_every_model_field_has_its_wire_field(cls: type, message: type, exact: bool) -> None:
    model_fields = {f.name for f in dataclasses.fields(cls)}
    wire_fields = set(message.DESCRIPTOR.fields_by_name)  # type: ignore[attr-defined]
    assert model_fields <= wire_fields, f"no wire field for {model_fields - wire_fields}"
    if exact:
        assert wire_fields <= model_fields, f"no model field for {wire_fields - model_fields}"


MODEL_ENUMS = [
    (model.RunState, run_pb2.RunState.DESCRIPTOR, "RUN_STATE_"),
    (model.Executor, task_pb2.Executor.DESCRIPTOR, "EXECUTOR_"),
    (model.Placement, task_pb2.Placement.DESCRIPTOR, "PLACEMENT_"),
    (model.MisfirePolicy, task_pb2.MisfirePolicy.DESCRIPTOR, "MISFIRE_POLICY_"),
    (model.OverlapPolicy, task_pb2.OverlapPolicy.DESCRIPTOR, "OVERLAP_POLICY_"),
    (model.RegionState, cluster_pb2.RegionState.DESCRIPTOR, "REGION_STATE_"),
    (model.WorkerState, cluster_pb2.WorkerState.DESCRIPTOR, "WORKER_STATE_"),
]


@pytest.mark.parametrize(
    ("cls", "descriptor", "prefix"), MODEL_ENUMS, ids=[e[0].__name__ for e in MODEL_ENUMS]
)
def test_every_model_enum_member_has_its_wire_value(
    cls: type[enum.Enum], descriptor: EnumDescriptor, prefix: str
) -> None:
    wire_names = {v.name.removeprefix(prefix) for v in descriptor.values if v.number != 0}
    assert wire_names == {member.name for member in cls}


def all_enums(file: FileDescriptor) -> Iterator[EnumDescriptor]:
    """Every enum of a file, nested ones included."""
    yield from file.enum_types_by_name.values()
    pending = list(file.message_types_by_name.values())
    while pending:
        message = pending.pop()
        yield from message.enum_types
        pending.extend(message.nested_types)


@pytest.mark.parametrize("module", PROTO_FILES, ids=lambda m: m.__name__)
def test_every_enum_starts_with_unspecified_zero(module: object) -> None:
    file: FileDescriptor = module.DESCRIPTOR  # type: ignore[attr-defined]
    assert file.package == "taskmesh.v1"
    for wire_enum in all_enums(file):
        zero = wire_enum.values_by_number[0].name
        assert zero.endswith("_UNSPECIFIED"), f"{wire_enum.full_name} starts with {zero}"


# ---- every element of the contract is documented ----

# SourceCodeInfo paths: FileDescriptorProto / DescriptorProto / ... field numbers.
MESSAGE, ENUM, SERVICE = 4, 5, 6
FIELD, NESTED, NESTED_ENUM, ONEOF = 2, 3, 4, 8
VALUE, METHOD = 2, 2


def undocumented(file: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """Names of the messages, fields, enums, values, services and methods without a comment."""
    documented = {
        tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()
    }
    missing: list[str] = []

    def check(path: tuple[int, ...], name: str) -> None:
        if path not in documented:
            missing.append(name)

    def enum(path: tuple[int, ...], proto: descriptor_pb2.EnumDescriptorProto) -> None:
        check(path, proto.name)
        for i, value in enumerate(proto.value):
            check((*path, VALUE, i), f"{proto.name}.{value.name}")

    def message(path: tuple[int, ...], proto: descriptor_pb2.DescriptorProto) -> None:
        if proto.options.map_entry:
            return
        check(path, proto.name)
        for i, field in enumerate(proto.field):
            check((*path, FIELD, i), f"{proto.name}.{field.name}")
        for i, oneof in enumerate(proto.oneof_decl):
            if not oneof.name.startswith("_"):  # synthetic oneofs of `optional` fields
                check((*path, ONEOF, i), f"{proto.name}.{oneof.name}")
        for i, nested in enumerate(proto.nested_type):
            message((*path, NESTED, i), nested)
        for i, nested_enum in enumerate(proto.enum_type):
            enum((*path, NESTED_ENUM, i), nested_enum)

    for i, proto in enumerate(file.message_type):
        message((MESSAGE, i), proto)
    for i, enum_proto in enumerate(file.enum_type):
        enum((ENUM, i), enum_proto)
    for i, service in enumerate(file.service):
        check((SERVICE, i), service.name)
        for j, method in enumerate(service.method):
            check((SERVICE, i, METHOD, j), f"{service.name}.{method.name}")
    return missing


def test_every_message_field_enum_and_rpc_is_documented(tmp_path: Path) -> None:
    sources = sorted(
        p.relative_to(REPO / "protos").as_posix() for p in REPO.glob("protos/**/*.proto")
    )
    out = tmp_path / "descriptors.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "--proto_path=.",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *sources,
        ],
        cwd=REPO / "protos",
        check=True,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    missing = {f.name: names for f in files if (names := undocumented(f))}
    assert not missing, f"add a comment to each of these: {missing}"


# ---- (c) the services have the calls the tiers code against ----

SERVICES = {
    ("scheduler_pb2", "Scheduler"): {
        "Submit": (False, False),
        "SubmitWorkflow": (False, False),
        "GetTask": (False, False),
        "ListTasks": (False, False),
        "GetRun": (False, False),
        "ListRuns": (False, False),
        "Cancel": (False, False),
        "SetPriority": (False, False),
        "WatchEvents": (False, True),
        "GetCluster": (False, False),
        "PauseSchedule": (False, False),
        "ResumeSchedule": (False, False),
        "ListSchedules": (False, False),
        "DrainWorker": (False, False),
        "Retry": (False, False),
    },
    ("region_pb2", "Region"): {
        "Delegate": (False, False),
        "Reprioritise": (False, False),
        "Cancel": (False, False),
        "Describe": (False, False),
        "DrainWorker": (False, False),
    },
    ("region_pb2", "WorkerLink"): {"Connect": (True, True)},
}


@pytest.mark.parametrize(
    ("where", "methods"), SERVICES.items(), ids=lambda v: v[1] if isinstance(v, tuple) else None
)
def test_service_has_its_methods(
    where: tuple[str, str], methods: dict[str, tuple[bool, bool]]
) -> None:
    module_name, service_name = where
    module = {m.__name__.rsplit(".", 1)[1]: m for m in PROTO_FILES}[module_name]
    service = module.DESCRIPTOR.services_by_name[service_name]  # type: ignore[attr-defined]
    actual = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert actual == methods


def test_worker_and_region_messages_are_oneofs_of_batches() -> None:
    worker = region_pb2.WorkerMessage.DESCRIPTOR.oneofs_by_name["body"]
    region = region_pb2.RegionMessage.DESCRIPTOR.oneofs_by_name["body"]
    assert [f.name for f in worker.fields] == [
        "register",
        "heartbeat",
        "started",
        "results",
        "draining",
    ]
    assert [f.name for f in region.fields] == ["welcome", "assign", "cancel", "ack", "drain"]
    for batch in (region_pb2.AssignRuns, region_pb2.RunResults, region_pb2.AckResults):
        (field,) = batch.DESCRIPTOR.fields
        assert field.is_repeated, batch.DESCRIPTOR.name


# ---- the generated gRPC code works over a real channel ----


class AckingWorkerLink(region_pb2_grpc.WorkerLinkServicer):
    """Answers a registration with a welcome and every result batch with one ack batch."""

    async def Connect(
        self,
        request_iterator: AsyncIterator[region_pb2.WorkerMessage],
        context: grpc.aio.ServicerContext[region_pb2.WorkerMessage, region_pb2.RegionMessage],
    ) -> AsyncIterator[region_pb2.RegionMessage]:
        async for message in request_iterator:
            body = message.WhichOneof("body")
            if body == "register":
                welcome = region_pb2.WorkerWelcome(region="eu-west")
                yield region_pb2.RegionMessage(welcome=welcome)
            elif body == "results":
                acks = [result.run for result in message.results.results]
                yield region_pb2.RegionMessage(ack=region_pb2.AckResults(runs=acks))


async def test_worker_link_carries_batches_over_a_real_channel() -> None:
    server = grpc.aio.server()
    region_pb2_grpc.add_WorkerLinkServicer_to_server(AckingWorkerLink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    refs = [region_pb2.RunRef(run_id=str(uuid4()), epoch=epoch) for epoch in range(1, 4)]
    succeeded = run_pb2.RUN_STATE_SUCCEEDED
    results = [region_pb2.RunResult(run=ref, state=succeeded, exit_code=0) for ref in refs]

    async def worker_messages() -> AsyncIterator[region_pb2.WorkerMessage]:
        register = region_pb2.RegisterWorker(worker_id="w1", slots=4)
        yield region_pb2.WorkerMessage(register=register)
        yield region_pb2.WorkerMessage(results=region_pb2.RunResults(results=results))

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = region_pb2_grpc.WorkerLinkStub(channel)
            replies = [reply async for reply in stub.Connect(worker_messages())]
    finally:
        await server.stop(grace=None)
    assert [reply.WhichOneof("body") for reply in replies] == ["welcome", "ack"]
    assert list(replies[1].ack.runs) == refs
