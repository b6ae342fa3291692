"""The batcher alone, with a recording runner: budgets, waits, bounds, cancellation, failures."""

from __future__ import annotations

import threading
import time

import pytest

from sonovec.server.batcher import Batcher, BatchKey, Ticket
from sonovec.server.errors import ErrorKind, SonovecError

KEY = BatchKey("m", "encode")


class Recorder:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[object]] = []
        self.delay = delay
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, key: BatchKey, payloads: list[object]) -> list[object]:
        self.gate.wait()
        self.batches.append(list(payloads))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        return [(key.op, p) for p in payloads]


def make(runner: Recorder, **kw: float) -> Batcher:
    b = Batcher(
        runner,
        max_batch_cost=kw.get("budget", 4.0),
        max_wait_s=kw.get("wait", 0.05),
        max_queue_cost=kw.get("queue", 100.0),
        workers=int(kw.get("workers", 1)),
    )
    b.start()
    return b


def ticket(seconds: float = 10.0) -> Ticket:
    return Ticket(time.monotonic() + seconds)


def test_windows_from_many_requests_share_one_call_up_to_the_budget() -> None:
    runner = Recorder()
    runner.gate.clear()  # hold the worker so every window queues up first
    b = make(runner, budget=4.0, wait=0.01)
    futures = [f for i in range(3) for f in b.submit(KEY, [f"r{i}w0", f"r{i}w1"], [1.0, 1.0], ticket())]
    runner.gate.set()
    results = [f.result(timeout=5) for f in futures]
    b.stop()
    assert results[0] == ("encode", "r0w0")
    assert all(len(batch) <= 4 for batch in runner.batches)  # 4 s budget, 1 s windows
    assert sum(len(batch) for batch in runner.batches) == 6
    assert max(len(batch) for batch in runner.batches) >= 3  # windows of different requests batched


def test_each_key_can_have_its_own_budget() -> None:
    """A model with long windows (24 kHz chunks) batches more audio seconds per call."""
    runner = Recorder()
    runner.gate.clear()
    budgets = {"short": 2.0, "long": 6.0}
    b = Batcher(runner, max_batch_cost=lambda key: budgets[key.model], max_wait_s=0.01, max_queue_cost=100.0)
    b.start()
    futures = [f for model in budgets for f in b.submit(
        BatchKey(model, "encode"), [f"{model}{i}" for i in range(6)], [1.0] * 6, ticket())]
    runner.gate.set()
    for future in futures:
        future.result(timeout=5)
    b.stop()
    sizes = {model: max(len(batch) for batch in runner.batches if str(batch[0]).startswith(model))
             for model in budgets}
    assert sizes == {"short": 2, "long": 6}


def test_a_lone_window_runs_after_max_wait() -> None:
    runner = Recorder()
    b = make(runner, budget=100.0, wait=0.05)
    started = time.monotonic()
    (future,) = b.submit(KEY, ["only"], [1.0], ticket())
    assert future.result(timeout=5) == ("encode", "only")
    assert time.monotonic() - started < 2.0
    b.stop()


def test_different_keys_never_share_a_batch() -> None:
    runner = Recorder()
    runner.gate.clear()
    b = make(runner, budget=10.0, wait=0.01)
    f1 = b.submit(BatchKey("m", "quantize", 6.0), ["a"], [1.0], ticket())
    f2 = b.submit(BatchKey("m", "quantize", 12.0), ["b"], [1.0], ticket())
    runner.gate.set()
    assert f1[0].result(5) == ("quantize", "a") and f2[0].result(5) == ("quantize", "b")
    assert sorted(map(len, runner.batches)) == [1, 1]
    b.stop()


def test_full_queue_refuses_whole_requests_with_retry_after() -> None:
    runner = Recorder()
    runner.gate.clear()
    b = make(runner, queue=3.0, wait=0.0)
    b.submit(KEY, ["a"], [1.0], ticket())  # taken by the (held) worker
    time.sleep(0.05)
    b.submit(KEY, ["b", "c"], [1.0, 1.0], ticket())
    with pytest.raises(SonovecError) as err:
        b.submit(KEY, ["d", "e"], [1.0, 1.0], ticket())
    assert err.value.kind is ErrorKind.OVERLOADED and err.value.retry_after >= 1
    assert b.queued_jobs == 2  # nothing of the refused request was queued
    runner.gate.set()
    b.stop()


def test_a_request_larger_than_the_queue_is_too_large_not_overloaded() -> None:
    b = make(Recorder(), queue=3.0)
    with pytest.raises(SonovecError) as err:
        b.submit(KEY, ["a"] * 4, [1.0] * 4, ticket())
    assert err.value.kind is ErrorKind.TOO_LARGE
    b.stop()


def test_cancelled_and_expired_windows_are_dropped_before_the_model() -> None:
    runner = Recorder()
    runner.gate.clear()
    b = make(runner, wait=0.0)
    b.submit(KEY, ["first"], [1.0], ticket())
    time.sleep(0.05)  # the worker holds "first"
    gone = ticket()
    cancelled = b.submit(KEY, ["cancelled"], [1.0], gone)
    expired = b.submit(KEY, ["expired"], [1.0], ticket(0.01))
    kept = b.submit(KEY, ["kept"], [1.0], ticket())
    gone.cancel()
    time.sleep(0.05)
    runner.gate.set()
    assert kept[0].result(5) == ("encode", "kept")
    assert cancelled[0].cancelled()
    with pytest.raises(SonovecError) as err:
        expired[0].result(5)
    assert err.value.kind is ErrorKind.DEADLINE
    ran = [p for batch in runner.batches for p in batch]
    assert "cancelled" not in ran and "expired" not in ran
    b.stop()


def test_a_failing_model_call_reaches_every_waiting_request() -> None:
    runner = Recorder(fail=True)
    runner.gate.clear()
    b = make(runner, budget=10.0, wait=0.01)
    futures = b.submit(KEY, ["a", "b"], [1.0, 1.0], ticket()) + b.submit(KEY, ["c"], [1.0], ticket())
    runner.gate.set()
    for future in futures:
        with pytest.raises(SonovecError) as err:
            future.result(5)
        assert err.value.kind is ErrorKind.INTERNAL and "boom" not in err.value.message  # no raw text
    runner.fail = False
    assert b.submit(KEY, ["after"], [1.0], ticket())[0].result(5) == ("encode", "after")  # still serving
    b.stop()


def test_stop_drains_queued_work_then_refuses_new_work() -> None:
    runner = Recorder(delay=0.01)
    b = make(runner, budget=1.0, wait=0.0)
    futures = b.submit(KEY, list(range(5)), [1.0] * 5, ticket())
    b.stop(timeout=5)
    assert [f.result(0) for f in futures] == [("encode", i) for i in range(5)]
    with pytest.raises(SonovecError) as err:
        b.submit(KEY, ["late"], [1.0], ticket())
    assert err.value.kind is ErrorKind.UNAVAILABLE


def test_workers_run_batches_side_by_side() -> None:
    """Two workers: the second batch starts while the first is still in the model (a barrier both
    must reach proves it; one worker would time out at the barrier)."""
    both_in_model = threading.Barrier(2, timeout=5)

    def runner(key: BatchKey, payloads: list[object]) -> list[object]:
        both_in_model.wait()
        return list(payloads)

    b = Batcher(runner, max_batch_cost=1.0, max_wait_s=0.0, max_queue_cost=10.0, workers=2)
    b.start()
    futures = b.submit(KEY, ["a", "b"], [1.0, 1.0], ticket())  # two batches: the budget holds one
    assert [f.result(timeout=5) for f in futures] == ["a", "b"]
    b.stop(timeout=5)


def test_one_worker_runs_one_batch_at_a_time() -> None:
    inside = 0
    most = 0
    lock = threading.Lock()

    def runner(key: BatchKey, payloads: list[object]) -> list[object]:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.02)
        with lock:
            inside -= 1
        return list(payloads)

    b = Batcher(runner, max_batch_cost=1.0, max_wait_s=0.0, max_queue_cost=10.0, workers=1)
    b.start()
    for f in b.submit(KEY, list(range(5)), [1.0] * 5, ticket()):
        f.result(timeout=5)
    b.stop(timeout=5)
    assert most == 1


def test_workers_stop_together_after_draining() -> None:
    runner = Recorder(delay=0.05)
    b = make(runner, budget=1.0, wait=0.0, workers=3)
    futures = b.submit(KEY, list(range(6)), [1.0] * 6, ticket())
    b.stop(timeout=5)
    assert [f.result(timeout=0) for f in futures] == [("encode", i) for i in range(6)]
    with pytest.raises(SonovecError):
        b.submit(KEY, ["late"], [1.0], ticket())


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        Batcher(Recorder(), max_batch_cost=1.0, max_wait_s=0.0, max_queue_cost=1.0, workers=0)
