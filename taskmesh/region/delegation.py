"""The master-facing ``Region`` service: delegation into the queue, reprioritisation, cancels.

Fencing: a message naming an epoch older than the one the region holds a run under is
ignored (or, for a delegation, refused as STALE_EPOCH); a delegation under a newer epoch
replaces the region's copy, withdrawing it from its worker if it had one.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from uuid import UUID

import grpc

from taskmesh.common.errors import NotFoundError, ValidationError
from taskmesh.common.model import PRIORITY_MAX, PRIORITY_MIN, RunState, Transition
from taskmesh.common.rpc import cluster_pb2, region_pb2, region_pb2_grpc
from taskmesh.common.rpc.runs import claimed_run_from_proto
from taskmesh.common.rpc.status import abort_with
from taskmesh.region import messages
from taskmesh.region.heap_trimmer import HeapTrimmer
from taskmesh.region.holdings import QueuedRun
from taskmesh.region.runtime import RegionRuntime

log = logging.getLogger(__name__)

Reason = region_pb2.RefusalReason
DEQUEUED_MEMORY = 10_000  # cancelled runs remembered, so a retried Cancel gets the same answer


def refusal(run_id: str, reason: Reason.ValueType, detail: str) -> region_pb2.RefusedRun:
    """A RefusedRun."""
    return region_pb2.RefusedRun(run_id=run_id, reason=reason, detail=detail)


class RegionService(region_pb2_grpc.RegionServicer):
    """Serves ``Region``: Delegate, Reprioritise, Cancel, Describe and DrainWorker."""

    def __init__(
        self, runtime: RegionRuntime, describe: Callable[[], cluster_pb2.RegionStatus]
    ) -> None:
        self._runtime = runtime
        self._describe = describe
        self._dequeued: OrderedDict[UUID, int] = OrderedDict()  # answers retried cancels
        self.trimmer = HeapTrimmer()

    async def Delegate(
        self, request: region_pb2.DelegateRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> region_pb2.DelegateResponse:
        """Queue runs up to the free credit; refuse the rest, saying why."""
        self._runtime.heard_from_master = self._runtime.clock()
        response = region_pb2.DelegateResponse()
        for message in request.runs:
            refused = self.delegate(message)
            if refused is None:
                response.accepted_run_ids.append(message.run_id)
            else:
                response.refused.append(refused)
        response.credit = self._runtime.credit
        response.queue_depth = len(self._runtime.queue)
        self.trimmer.delegated(len(request.runs))
        if response.refused:
            log.info(
                "delegation from %s: %d accepted, %d refused",
                request.master_id or "?",
                len(response.accepted_run_ids),
                len(response.refused),
            )
        return response

    def delegate(self, message: region_pb2.ClaimedRun) -> region_pb2.RefusedRun | None:
        """Queue one delegated run; None when it is (or already was) accepted."""
        runtime = self._runtime
        if runtime.draining:
            return refusal(message.run_id, Reason.REFUSAL_REASON_DRAINING, "region is draining")
        try:
            claimed = claimed_run_from_proto(message)
            _check(claimed.region, runtime.name, claimed.priority)
        except ValidationError as error:
            return refusal(message.run_id, Reason.REFUSAL_REASON_INVALID, str(error))
        held = runtime.held_epoch(claimed.run_id)
        if held is not None and held >= claimed.epoch:
            if held == claimed.epoch:
                return None  # delegation is idempotent
            detail = f"held under epoch {held}, newer than {claimed.epoch}"
            return refusal(message.run_id, Reason.REFUSAL_REASON_STALE_EPOCH, detail)
        if held is not None:
            self._forget(claimed.run_id)
        if not runtime.registry.supports(claimed.executor):
            detail = f"no worker of region {runtime.name} runs {claimed.executor} commands"
            return refusal(message.run_id, Reason.REFUSAL_REASON_UNSUPPORTED, detail)
        if runtime.queue.credit <= 0:
            detail = f"queue is full ({runtime.queue.capacity} runs)"
            return refusal(message.run_id, Reason.REFUSAL_REASON_NO_CREDIT, detail)
        runtime.enqueue(QueuedRun(claimed, claimed.priority, runtime.clock(), wire=message))
        return None

    def _forget(self, run_id: UUID) -> None:
        """Drop the region's copy of a run delegated again under a newer epoch."""
        runtime = self._runtime
        if runtime.queue.remove(str(run_id)) is not None:
            return
        held = runtime.registry.holder(run_id)
        if held is not None:
            runtime.withdraw(held, "delegated again under a newer epoch")

    async def Reprioritise(
        self,
        request: region_pb2.ReprioritiseRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> region_pb2.ReprioritiseResponse:
        """Give queued runs new priorities; runs no longer queued are left alone."""
        response = region_pb2.ReprioritiseResponse()
        queue = self._runtime.queue
        for item in request.runs:
            try:
                run_id, epoch = messages.run_key(item.run)
            except ValidationError:
                continue
            queued = queue.get(str(run_id))
            if queued is None or queued.epoch > epoch:
                continue
            priority = min(max(item.priority, PRIORITY_MIN), PRIORITY_MAX)
            queue.reprioritise(str(run_id), priority)
            queued.priority = priority
            response.run_ids.append(item.run.run_id)
        return response

    async def Cancel(
        self,
        request: region_pb2.CancelRunsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> region_pb2.CancelRunsResponse:
        """Dequeue queued runs (recorded cancelled before answering); signal running ones."""
        try:
            keys = [messages.run_key(ref) for ref in request.runs]
        except ValidationError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        response = region_pb2.CancelRunsResponse()
        reason = request.reason or "cancelled"
        transitions = []
        for run_id, epoch in keys:
            if (transition := self._dequeue(run_id, epoch, reason)) is not None:
                transitions.append(transition)
            if self._dequeued.get(run_id, epoch + 1) <= epoch:
                response.dequeued_run_ids.append(str(run_id))
            elif self._signal(run_id, epoch, reason):
                response.signalled_run_ids.append(str(run_id))
        # Waits for earlier cancels too: a retried call answers once they are recorded.
        await self._runtime.writer.write(transitions)
        return response

    def _dequeue(self, run_id: UUID, epoch: int, reason: str) -> Transition | None:
        """Take a queued run off the queue; its CANCELLED transition, or None if not queued."""
        queued = self._runtime.queue.get(str(run_id))
        if queued is None or queued.epoch > epoch:
            return None
        self._runtime.queue.remove(str(run_id))
        self._dequeued[run_id] = queued.epoch
        while len(self._dequeued) > DEQUEUED_MEMORY:
            self._dequeued.popitem(last=False)
        now = self._runtime.now()
        return Transition(run_id, queued.epoch, RunState.CANCELLED, now, error=reason)

    def _signal(self, run_id: UUID, epoch: int, reason: str) -> bool:
        """Tell the worker holding a run to stop it; False when no worker holds it."""
        held = self._runtime.registry.holder(run_id)
        if held is None or held.epoch > epoch:
            return False
        worker = self._runtime.registry.get(held.worker_id)
        if worker is not None:
            worker.send(messages.cancel([(run_id, held.epoch)], reason))
        return True

    async def Describe(
        self, request: region_pb2.DescribeRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> region_pb2.DescribeResponse:
        """The region's own status."""
        return region_pb2.DescribeResponse(status=self._describe())

    async def DrainWorker(
        self,
        request: cluster_pb2.DrainWorkerRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> cluster_pb2.DrainWorkerResponse:
        """Ask one connected worker to drain (it stops taking work, finishes, disconnects)."""
        runtime = self._runtime
        worker = runtime.registry.get(request.worker_id)
        if worker is None:
            error = NotFoundError(
                f"worker {request.worker_id!r} is not connected to region {runtime.name}"
            )
            await abort_with(context, error)
        grace = runtime.config.shutdown_timeout
        if request.HasField("grace"):
            grace = request.grace.ToTimedelta()
        worker.send(messages.drain(request.reason or "drain requested", grace))
        log.info("asked worker %s to drain within %s", worker.id, grace)
        return cluster_pb2.DrainWorkerResponse(region=runtime.name)


def _check(region: str, name: str, priority: int) -> None:
    """Reject a run delegated to another region or with a priority out of range."""
    if region and region != name:
        raise ValidationError("region", f"run was delegated to region {region}, this is {name}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValidationError("priority", f"must be in {PRIORITY_MIN}..{PRIORITY_MAX}")
