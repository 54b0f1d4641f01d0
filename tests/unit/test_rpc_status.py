"""Errors cross the wire as gRPC statuses and come back as the same taskmesh types."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from taskmesh.common.errors import (
    ConflictError,
    NotFoundError,
    NotSupportedError,
    OverloadedError,
    TaskmeshError,
    UnavailableError,
    ValidationError,
)
from taskmesh.common.rpc import scheduler_pb2, scheduler_pb2_grpc
from taskmesh.common.rpc.status import abort_with, error_from_rpc, status_code

ERRORS: dict[str, TaskmeshError] = {
    "validation": ValidationError("spec.command", "must not be empty"),
    "missing": NotFoundError("task 42 does not exist"),
    "conflict": ConflictError("run already finished"),
    "overloaded": OverloadedError("too many pending runs", retry_after=2.5),
    "unsupported": NotSupportedError("not built yet"),
    "unmapped": TaskmeshError("something else"),
}


class RaisingScheduler(scheduler_pb2_grpc.SchedulerServicer):
    async def GetTask(
        self,
        request: scheduler_pb2.GetTaskRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> scheduler_pb2.GetTaskResponse:
        await abort_with(context, ERRORS[request.task_id])


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server = grpc.aio.server()
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(RaisingScheduler(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)


def call(address: str, key: str) -> TaskmeshError:
    with grpc.insecure_channel(address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        try:
            stub.GetTask(scheduler_pb2.GetTaskRequest(task_id=key), timeout=5)
        except grpc.RpcError as error:
            return error_from_rpc(error)
    raise AssertionError("the call should have failed")


@pytest.mark.parametrize("key", sorted(ERRORS))
async def test_error_round_trips_with_its_type(address: str, key: str) -> None:
    error = await asyncio.to_thread(call, address, key)
    assert type(error) is type(ERRORS[key])


async def test_validation_error_keeps_its_field(address: str) -> None:
    error = await asyncio.to_thread(call, address, "validation")
    assert isinstance(error, ValidationError)
    assert error.field == "spec.command"
    assert error.message == "must not be empty"
    assert str(error) == "spec.command: must not be empty"


async def test_overloaded_error_keeps_retry_after(address: str) -> None:
    error = await asyncio.to_thread(call, address, "overloaded")
    assert isinstance(error, OverloadedError)
    assert error.retry_after == 2.5


async def test_async_client_errors_map_too(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTask(scheduler_pb2.GetTaskRequest(task_id="missing"), timeout=5)
    assert isinstance(error_from_rpc(caught.value), NotFoundError)


def test_unreachable_server_is_unavailable() -> None:
    error = call("127.0.0.1:1", "missing")
    assert isinstance(error, UnavailableError)


def test_unmapped_errors_are_internal() -> None:
    assert status_code(TaskmeshError("x")) is grpc.StatusCode.INTERNAL
    assert status_code(NotFoundError("x")) is grpc.StatusCode.NOT_FOUND
