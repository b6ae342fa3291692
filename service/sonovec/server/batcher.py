"""Dynamic batching of windows from many requests into one model call.

The batcher knows nothing about the model: it queues opaque payloads under a ``BatchKey``, forms
batches up to a *cost* budget (audio seconds) or a maximum wait, and hands each batch to a
``runner`` on one of its worker threads. It is bounded (admission fails fast with OVERLOADED), drops the
windows of cancelled or expired requests before they run, and delivers a runner failure to every
request in the batch.

With ``workers > 1`` several batches are in flight at once (the runner must then be thread-safe):
on a GPU one batch is stacked and copied while the previous one computes; on a CPU, batches run
side by side on single-threaded model calls (for runtimes whose own threading scales poorly).

::

    request A ─┬─ w0 w1 w2 ─┐             ┌─ runner(key, [A.w0, A.w1, B.w0, ...]) ─┐
    request B ─┴─ w0 ───────┴─> queue[key] ┤                                        ├─> futures
                                           └─ budget: max_batch_cost or max_wait ───┘
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from sonovec.server.errors import ErrorKind, SonovecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchKey:
    """Windows batch together only under the same key; per-request options live here, never in
    shared model state."""

    model: str
    op: str  # "encode" (latents), "quantize" (latents + codes), "decode"
    bandwidth: float = 0.0


class Ticket:
    """One request's stake in the queue: its deadline, and whether it still wants its results."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic() seconds
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def expired(self) -> bool:
        return time.monotonic() > self.deadline


@dataclass
class _Job:
    payload: Any
    cost: float
    ticket: Ticket
    future: Future[Any]
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What one runner call did, for metrics."""

    key: BatchKey
    size: int
    cost: float
    queue_waits: list[float]
    run_seconds: float


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Complete a future unless its request gave up on it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled by the waiting request
        pass


Runner = Callable[[BatchKey, list[Any]], Sequence[Any]]


class Batcher:
    def __init__(
        self,
        runner: Runner,
        *,
        max_batch_cost: float | Callable[[BatchKey], float],
        max_wait_s: float,
        max_queue_cost: float,
        on_batch: Callable[[BatchStats], None] | None = None,
        workers: int = 1,
        name: str = "batcher",
        max_queue_wait_s: float = math.inf,
        on_refuse: Callable[[str], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a batcher needs at least one worker; got {workers}")
        self._runner = runner
        # the batch budget, one for all keys or per key (models whose windows differ in length)
        self.budget: Callable[[BatchKey], float] = (
            max_batch_cost if callable(max_batch_cost) else lambda _key: float(max_batch_cost)
        )
        self.max_wait_s = max_wait_s
        self.max_queue_cost = max_queue_cost
        self.max_queue_wait_s = max_queue_wait_s
        self._on_batch = on_batch
        self._on_refuse = on_refuse
        self._queues: dict[BatchKey, deque[_Job]] = {}
        self._queued_cost = 0.0
        self._running_cost = 0.0  # cost of the batches being run now: still ahead of a new request
        self._queued_jobs = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._throughput = 0.0  # cost units per second of one worker, exponential moving average
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]

    # ---- admission ----

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(
        self, key: BatchKey, payloads: Sequence[Any], costs: Sequence[float], ticket: Ticket
    ) -> list[Future[Any]]:
        """Queue all of one request's windows, or none of them (OVERLOADED, with Retry-After)."""
        total = float(sum(costs))
        if total > self.max_queue_cost:
            raise SonovecError(
                ErrorKind.TOO_LARGE,
                f"request needs {total:.1f} s of model work, more than the queue holds",
                allowed=f"at most {self.max_queue_cost:.0f} audio seconds per request",
            )
        futures: list[Future[Any]] = [Future() for _ in payloads]
        with self._cond:
            if self._stopping:
                raise SonovecError(ErrorKind.UNAVAILABLE, "the service is shutting down", retry_after=1.0)
            self._admit(total, ticket, self.budget(key))
            queue = self._queues.setdefault(key, deque())
            for payload, cost, future in zip(payloads, costs, futures, strict=True):
                queue.append(_Job(payload, cost, ticket, future))
            self._queued_cost += total
            self._queued_jobs += len(payloads)
            self._cond.notify()
        return futures

    def check_wait(self, key: BatchKey) -> None:
        """Refuse (OVERLOADED) now if a request for ``key`` would be refused for the queue wait
        whatever its size: before its audio is decoded, so that an overloaded server does not spend
        its cores decoding requests it will refuse (the wait check does not depend on the request)."""
        with self._cond:
            self._check_wait(self.budget(key))

    def _check_wait(self, batch_cost: float) -> float:
        """Under the lock: the wait ahead of a new request, with one batch of slack (its windows may
        wait for a batch to form; its reply is pooled and sent after); OVERLOADED over the bound.
        Its own work is not counted: a request that alone needs longer would never be served."""
        wait = self.projected_wait() + self._seconds_for(batch_cost)
        if wait > self.max_queue_wait_s:
            self._refuse("queue_wait")
            raise SonovecError(
                ErrorKind.OVERLOADED,
                f"queue wait would be about {wait:.1f} s, over the {self.max_queue_wait_s:g} s bound",
                retry_after=max(1.0, wait - self.max_queue_wait_s),
            )
        return wait

    def _admit(self, total: float, ticket: Ticket, batch_cost: float) -> None:
        """Under the lock: refuse (OVERLOADED) a request whose windows would not fit the queue's
        memory bound (audio seconds), or would wait longer than ``max_queue_wait_s`` or than its
        own deadline allows, by the projected wait: queued cost / measured throughput."""
        if self._queued_cost + total > self.max_queue_cost:
            self._refuse("queue_cost")
            raise SonovecError(
                ErrorKind.OVERLOADED,
                f"queue full: {self._queued_cost:.0f} of {self.max_queue_cost:.0f} audio seconds waiting",
                retry_after=self.retry_after(),
            )
        wait = self._check_wait(batch_cost)
        finish = wait + self._seconds_for(total)  # until its last window is done
        left = ticket.deadline - time.monotonic()
        if finish > left:
            self._refuse("deadline")
            raise SonovecError(
                ErrorKind.OVERLOADED,
                f"the queue (about {wait:.1f} s of wait) would outlast the request's deadline ({left:.1f} s)",
                retry_after=max(1.0, finish - left),
            )

    def _refuse(self, reason: str) -> None:
        if self._on_refuse is not None:
            self._on_refuse(reason)

    @property
    def throughput(self) -> float:
        """Audio seconds per second all workers achieve together (moving average of measured
        batches; 0 until the first batch ran)."""
        return self._throughput * len(self._threads)

    def _seconds_for(self, cost: float) -> float:
        return 0.0 if self._throughput <= 0 else cost / self.throughput

    def projected_wait(self) -> float:
        """Seconds a request queued now would wait before its first window runs: queued and
        running cost over the measured throughput (0 until a batch has been measured)."""
        return self._seconds_for(self._queued_cost + self._running_cost)

    def retry_after(self) -> float:
        """Seconds until the current queue has likely drained, at the measured throughput."""
        if self._throughput <= 0:
            return 1.0
        return float(max(1, math.ceil(self.projected_wait())))

    @property
    def queued_cost(self) -> float:
        return self._queued_cost

    @property
    def queued_jobs(self) -> int:
        return self._queued_jobs

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what is queued, then end the workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(None if end is None else max(0.0, end - time.monotonic()))

    # ---- the worker ----

    def _work(self) -> None:
        cycle_start = time.monotonic()
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
            taken = time.monotonic()
            key, jobs = batch
            cost = sum(job.cost for job in jobs)
            with self._cond:
                self._running_cost += cost
            try:
                ran = self._run(key, jobs)
            finally:
                with self._cond:
                    self._running_cost = max(0.0, self._running_cost - cost)
            if ran:
                # throughput over the whole cycle (taking the batch, running it, settling its
                # futures) when the worker went straight on: the rate the queue really drains at
                busy = taken - cycle_start <= max(self.max_wait_s, 1e-3)
                since = cycle_start if busy else taken
                self._observe_rate(cost, time.monotonic() - since)
            cycle_start = time.monotonic()

    def _observe_rate(self, cost: float, seconds: float) -> None:
        rate = cost / max(seconds, 1e-6)
        self._throughput = rate if self._throughput == 0 else 0.8 * self._throughput + 0.2 * rate

    def _next_batch(self) -> tuple[BatchKey, list[_Job]] | None:
        """Under the lock: wait for a batch that is full or old enough; None once stopped and empty."""
        while True:
            key = self._oldest_key()
            if key is None:
                if self._stopping:
                    return None
                self._cond.wait()
                continue
            queue = self._queues[key]
            waited = time.monotonic() - queue[0].enqueued
            budget = self.budget(key)
            full = sum(job.cost for job in queue) >= budget
            if full or waited >= self.max_wait_s or self._stopping:
                jobs = self._take(queue, budget)
                if self._queued_jobs:
                    self._cond.notify()  # another worker may take the rest now
                return key, jobs
            self._cond.wait(self.max_wait_s - waited)

    def _oldest_key(self) -> BatchKey | None:
        heads = [(queue[0].enqueued, key) for key, queue in self._queues.items() if queue]
        return min(heads, key=lambda head: head[0])[1] if heads else None

    def _take(self, queue: deque[_Job], budget: float) -> list[_Job]:
        jobs: list[_Job] = []
        cost = 0.0
        while queue and (not jobs or cost + queue[0].cost <= budget):
            job = queue.popleft()
            self._queued_cost -= job.cost
            self._queued_jobs -= 1
            if self._drop_if_unwanted(job):
                continue
            jobs.append(job)
            cost += job.cost
        if self._queued_jobs == 0:
            self._queued_cost = 0.0  # no float drift once empty
        return jobs

    @staticmethod
    def _drop_if_unwanted(job: _Job) -> bool:
        if job.ticket.cancelled or job.future.cancelled():
            job.future.cancel()
            return True
        if job.ticket.expired:
            _settle(
                job.future, error=SonovecError(ErrorKind.DEADLINE, "request deadline passed while queued")
            )
            return True
        return False

    def _run(self, key: BatchKey, jobs: list[_Job]) -> bool:
        """Run one batch and settle its futures; True if the model call succeeded."""
        if not jobs:
            return False
        started = time.monotonic()
        try:
            results = self._runner(key, [job.payload for job in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"runner returned {len(results)} results for {len(jobs)} windows")
        except Exception as exc:  # every waiting request hears about the failure
            log.exception("model call failed for %s (%d windows)", key, len(jobs))
            error = (
                exc
                if isinstance(exc, SonovecError)
                else SonovecError(
                    ErrorKind.INTERNAL, f"model call failed ({type(exc).__name__}); see the server log"
                )
            )
            for job in jobs:
                _settle(job.future, error=error)
            return False
        elapsed = time.monotonic() - started
        cost = sum(job.cost for job in jobs)
        if self._on_batch is not None:  # before the results, so a caller sees its own batch counted
            waits = [started - job.enqueued for job in jobs]
            self._on_batch(BatchStats(key, len(jobs), cost, waits, elapsed))
        for job, result in zip(jobs, results, strict=True):
            _settle(job.future, result=result)
        return True
