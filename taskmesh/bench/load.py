"""Offered load: no-op tasks submitted over gRPC and REST, one at a time or in batches.

Requests are built before the clock starts: preparing payloads is the client's cost, not the
scheduler's. A batch is one ``SubmitWorkflow`` (gRPC) or ``POST /v1/workflows`` (REST) of
independent tasks, stored in one transaction.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import aiohttp
import grpc
from google.protobuf import json_format

from taskmesh.common.errors import TaskmeshError
from taskmesh.common.ledger.benchmarks import LABEL
from taskmesh.common.model import AtSchedule, Executor, TaskSpec
from taskmesh.common.rpc import scheduler_pb2, scheduler_pb2_grpc
from taskmesh.common.rpc.tasks import task_spec_to_proto

CALL_TIMEOUT = 120.0


class BenchmarkError(TaskmeshError):
    """A benchmark could not produce its figure (a failed call, a run that never finished)."""


def noop_specs(
    tag: str, count: int, regions: Sequence[str], at: datetime | None = None
) -> list[TaskSpec]:
    """``count`` no-op tasks labelled ``bench=<tag>``, spread evenly over ``regions``."""
    schedule = AtSchedule(at) if at is not None else None
    return [
        TaskSpec(
            name=f"{tag}-{index}",
            command="noop",
            executor=Executor.NOOP,
            region=regions[index % len(regions)],
            schedule=schedule,
            labels={LABEL: tag},
        )
        for index in range(count)
    ]


def batches(specs: Sequence[TaskSpec], size: int) -> list[Sequence[TaskSpec]]:
    """``specs`` cut into consecutive batches of at most ``size``."""
    return [specs[start : start + size] for start in range(0, len(specs), size)]


def submit_request(spec: TaskSpec) -> scheduler_pb2.SubmitRequest:
    """One gRPC ``Submit``."""
    return scheduler_pb2.SubmitRequest(spec=task_spec_to_proto(spec))


def workflow_request(specs: Iterable[TaskSpec]) -> scheduler_pb2.SubmitWorkflowRequest:
    """One gRPC ``SubmitWorkflow`` of independent tasks."""
    tasks = [
        scheduler_pb2.WorkflowTask(local_name=f"t{index}", spec=task_spec_to_proto(spec))
        for index, spec in enumerate(specs)
    ]
    return scheduler_pb2.SubmitWorkflowRequest(tasks=tasks)


def task_body(spec: TaskSpec) -> dict[str, Any]:
    """One REST ``POST /v1/tasks`` body: the spec in proto3 JSON, as the REST API reads it."""
    return json_format.MessageToDict(task_spec_to_proto(spec), preserving_proto_field_name=True)


def workflow_body(specs: Iterable[TaskSpec]) -> dict[str, Any]:
    """One REST ``POST /v1/workflows`` body of independent tasks."""
    tasks = [{**task_body(spec), "local_name": f"t{index}"} for index, spec in enumerate(specs)]
    return {"name": "bench", "tasks": tasks}


async def bounded(calls: Iterable[Awaitable[None]], limit: int) -> None:
    """Await ``calls`` with at most ``limit`` in flight; the first failure is raised."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Awaitable[None]) -> None:
        try:
            await call
        finally:
            semaphore.release()

    pending = iter(calls)
    taken: list[Awaitable[None]] = []
    try:
        async with asyncio.TaskGroup() as group:
            while True:
                await semaphore.acquire()  # before taking a call: none is left unawaited
                call = next(pending, None)
                if call is None:
                    break
                taken.append(call)
                group.create_task(one(call))
    except ExceptionGroup as failures:  # the first failure, with its message, not a group
        # Calls whose task was cancelled before it began, or never taken, were never awaited.
        for unstarted in [*taken, *pending]:
            if (
                inspect.iscoroutine(unstarted)
                and inspect.getcoroutinestate(unstarted) == "CORO_CREATED"
            ):
                unstarted.close()
        raise first_error(failures) from None


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf exception of a (possibly nested) exception group."""
    error = group.exceptions[0]
    return first_error(error) if isinstance(error, BaseExceptionGroup) else error


class Submitter:
    """The master's client API over gRPC (asyncio) and REST."""

    def __init__(self, grpc_address: str, rest_url: str) -> None:
        """Talk to the master at these addresses."""
        self._channel = grpc.aio.insecure_channel(grpc_address)
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)
        self._rest_url = rest_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        """Open the HTTP session."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the channel and the session."""
        if self._session is not None:
            await self._session.close()
        await self._channel.close()

    async def submit(self, request: scheduler_pb2.SubmitRequest) -> None:
        """One task over gRPC."""
        await self._grpc(self._stub.Submit(request, timeout=CALL_TIMEOUT))

    async def submit_workflow(self, request: scheduler_pb2.SubmitWorkflowRequest) -> None:
        """A batch of tasks over gRPC."""
        await self._grpc(self._stub.SubmitWorkflow(request, timeout=CALL_TIMEOUT))

    async def post_task(self, body: dict[str, Any]) -> None:
        """One task over REST."""
        await self._post("/v1/tasks", body)

    async def post_workflow(self, body: dict[str, Any]) -> None:
        """A batch of tasks over REST."""
        await self._post("/v1/workflows", body)

    async def _grpc(self, call: Awaitable[object]) -> None:
        try:
            await call
        except grpc.aio.AioRpcError as error:
            raise BenchmarkError(f"submission failed: {error.code()} {error.details()}") from None

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        assert self._session is not None, "use the Submitter as an async context manager"
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
        async with self._session.post(self._rest_url + path, json=body, timeout=timeout) as answer:
            if answer.status >= 300:
                text = await answer.text()
                raise BenchmarkError(f"POST {path} answered {answer.status}: {text[:300]}")
