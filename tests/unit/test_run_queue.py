"""The region's run queue: priority order, aging, kind filtering, bounds, reprioritisation."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from taskmesh.region.run_queue import QueueFullError, RunQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_queue(capacity: int = 100, age_step: float = 10.0) -> tuple[RunQueue[str], FakeClock]:
    clock = FakeClock()
    return RunQueue(capacity, timedelta(seconds=age_step), clock), clock


def pop_all(queue: RunQueue[str]) -> list[str]:
    return list(queue.drain())


def test_higher_priority_first_then_oldest() -> None:
    queue, clock = make_queue()
    for run_id, priority in [("low-1", 0), ("high-1", 5), ("low-2", 0), ("high-2", 5)]:
        queue.push(run_id, "default", priority, run_id)
        clock.now += 0.001
    assert pop_all(queue) == ["high-1", "high-2", "low-1", "low-2"]


def test_aging_lets_an_old_low_priority_run_overtake() -> None:
    queue, clock = make_queue(age_step=1.0)
    queue.push("old-low", "default", 0, "old-low")
    clock.now += 10.5  # waited 10.5 age steps: effective priority 10.5
    queue.push("new-high", "default", 10, "new-high")
    assert queue.effective_priority("old-low") == pytest.approx(10.5)
    assert queue.pop() == "old-low"


def test_aging_bound_under_a_constant_stream_of_high_priority_work() -> None:
    queue, clock = make_queue(capacity=10_000, age_step=0.5)
    queue.push("starving", "default", 0, "starving")
    popped_at = None
    for step in range(1000):
        queue.push(f"high-{step}", "default", 20, f"high-{step}")
        clock.now += 0.1
        if queue.pop() == "starving":
            popped_at = step
            break
    # priority gap 20 at 0.5 s per step: starts after at most ~10 s = ~100 pushes.
    assert popped_at is not None
    assert popped_at <= 101


def test_kind_filter_skips_blocked_kinds_without_losing_them() -> None:
    queue, _ = make_queue()
    queue.push("a", "broken", 9, "a")
    queue.push("b", "healthy", 1, "b")
    assert queue.pop(lambda kind: kind != "broken") == "b"
    assert queue.pop(lambda kind: kind != "broken") is None
    assert len(queue) == 1
    assert queue.pop() == "a"


def test_capacity_is_enforced_and_advertised_as_credit() -> None:
    queue, _ = make_queue(capacity=2)
    assert queue.credit == 2
    queue.push("a", "default", 0, "a")
    queue.push("b", "default", 0, "b")
    assert queue.credit == 0
    with pytest.raises(QueueFullError):
        queue.push("c", "default", 0, "c")
    queue.pop()
    assert queue.credit == 1


def test_duplicate_push_is_refused() -> None:
    queue, _ = make_queue()
    queue.push("a", "default", 0, "a")
    with pytest.raises(ValueError, match="already queued"):
        queue.push("a", "default", 0, "a")


def test_reprioritised_run_overtakes_and_keeps_its_wait() -> None:
    queue, clock = make_queue(age_step=1.0)
    queue.push("first", "default", 5, "first")
    clock.now += 2
    queue.push("second", "default", 0, "second")
    assert queue.reprioritise("second", 9)
    assert queue.pop() == "second"
    assert queue.effective_priority("first") == pytest.approx(7)
    assert not queue.reprioritise("missing", 1)


def test_remove_takes_a_run_out() -> None:
    queue, _ = make_queue()
    queue.push("a", "default", 0, "a")
    queue.push("b", "default", 0, "b")
    assert queue.remove("a") == "a"
    assert queue.remove("a") is None
    assert "a" not in queue
    assert pop_all(queue) == ["b"]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RunQueue(0, timedelta(seconds=1), FakeClock())
    with pytest.raises(ValueError, match="age_step"):
        RunQueue(1, timedelta(0), FakeClock())


def test_matches_a_reference_model_under_random_operations() -> None:
    """Random pushes, pops, removals and reprioritisations (enough to trigger compaction)."""
    rng = random.Random(7)
    queue, clock = make_queue(capacity=5000, age_step=3.0)
    model: dict[str, tuple[int, float, int, str]] = {}  # run -> (priority, enqueued, seq, kind)
    sequence = 0
    for step in range(20_000):
        clock.now += rng.random()
        action = rng.random()
        if action < 0.45 and queue.credit > 0:
            run_id, kind, priority = f"r{step}", rng.choice("xyz"), rng.randint(-5, 5)
            queue.push(run_id, kind, priority, run_id)
            model[run_id] = (priority, clock.now, sequence, kind)
            sequence += 1
        elif action < 0.65 and model:
            run_id = rng.choice(sorted(model))
            assert queue.remove(run_id) == run_id
            del model[run_id]
        elif action < 0.85 and model:
            run_id = rng.choice(sorted(model))
            priority = rng.randint(-5, 5)
            assert queue.reprioritise(run_id, priority)
            _, enqueued, _, kind = model[run_id]
            model[run_id] = (priority, enqueued, sequence, kind)
            sequence += 1
        else:
            blocked = rng.choice("xyz ")
            allowed = [r for r, v in model.items() if v[3] != blocked]
            expected = min(
                allowed, key=lambda r: (model[r][1] - model[r][0] * 3.0, model[r][2]), default=None
            )
            assert queue.pop(lambda kind, b=blocked: kind != b) == expected
            if expected is not None:
                del model[expected]
        assert len(queue) == len(model)


def test_heavy_reprioritisation_compacts_and_keeps_order() -> None:
    queue, _ = make_queue(capacity=3000, age_step=1.0)
    for index in range(2000):
        queue.push(f"r{index}", "default", 0, f"r{index}")
    for round_ in range(3):
        for index in range(2000):
            queue.reprioritise(f"r{index}", (index * 7 + round_) % 11)
    garbage = sum(len(heap) for heap in queue._heaps.values()) - len(queue)
    assert garbage <= max(1024, len(queue))  # compacted rather than 6000 dead entries
    expected = sorted(range(2000), key=lambda i: (-((i * 7 + 2) % 11), i))
    assert pop_all(queue) == [f"r{i}" for i in expected]


def test_restore_keeps_the_wait_and_may_exceed_capacity() -> None:
    queue, clock = make_queue(capacity=1, age_step=1.0)
    queue.push("old", "default", 0, "old")
    clock.now += 10
    assert queue.pop() == "old"
    queue.push("new", "default", 5, "new")  # fills the queue meanwhile
    queue.restore("old", "default", 0, "old", enqueued_at=clock.now - 10)
    assert (len(queue), queue.credit) == (2, 0)  # over capacity: no credit, nothing lost
    assert queue.effective_priority("old") == 10.0  # it kept its 10 s of aging
    assert queue.get("old") == "old"
    assert "old" in queue
    assert pop_all(queue) == ["old", "new"]
    queue.push("x", "default", 0, "x")
    with pytest.raises(ValueError, match="already queued"):
        queue.restore("x", "default", 0, "x", 0.0)
