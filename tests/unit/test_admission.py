"""Admission by projected wait: queued cost over the measured throughput, against a bound and
against the request's own deadline; the audio-seconds cap stays as the memory bound."""

from __future__ import annotations

import threading
import time

import pytest

from sonovec.server.batcher import Batcher, BatchKey, Ticket
from sonovec.server.errors import ErrorKind, SonovecError

KEY = BatchKey("m", "encode")


class Slow:
    """A runner that takes ``seconds_per_cost`` per unit of cost (1 unit per payload) once open."""

    def __init__(self, seconds_per_cost: float) -> None:
        self.seconds_per_cost = seconds_per_cost
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, key: BatchKey, payloads: list[object]) -> list[object]:
        self.gate.wait()
        time.sleep(self.seconds_per_cost * len(payloads))
        return list(payloads)


def warmed(runner: Slow, refused: list[str], **kw: float) -> Batcher:
    """A batcher that has measured its throughput (one batch of 2 cost units)."""
    batcher = Batcher(
        runner,
        max_batch_cost=2.0,
        max_wait_s=0.001,
        max_queue_cost=kw.get("queue", 1e6),
        max_queue_wait_s=kw.get("bound", 1.0),
        on_refuse=refused.append,
    )
    batcher.start()
    for f in batcher.submit(KEY, ["a", "b"], [1.0, 1.0], Ticket(time.monotonic() + 60)):
        f.result(timeout=10)
    return batcher


def test_throughput_is_measured() -> None:
    batcher = warmed(Slow(0.02), [])
    assert batcher.throughput == pytest.approx(50, rel=0.3)  # 1 unit per 20 ms
    batcher.stop()


def test_a_projected_wait_over_the_bound_is_refused_with_retry_after() -> None:
    refused: list[str] = []
    runner = Slow(0.02)
    batcher = warmed(runner, refused, bound=1.0)
    runner.gate.clear()  # hold the worker: the queue only grows
    far = Ticket(time.monotonic() + 600)
    batcher.submit(KEY, list(range(60)), [1.0] * 60, far)  # 60 units = 1.2 s of work at 50/s: admitted
    with pytest.raises(SonovecError) as caught:  # would wait 1.2 s (+ one batch)
        batcher.submit(KEY, ["late"], [1.0], far)
    assert caught.value.kind == ErrorKind.OVERLOADED
    assert "wait" in caught.value.message
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    assert refused == ["queue_wait"]
    assert batcher.projected_wait() == pytest.approx(1.2, rel=0.35)
    runner.gate.set()
    batcher.stop()


def test_a_request_that_its_own_deadline_would_not_let_finish_is_refused() -> None:
    refused: list[str] = []
    runner = Slow(0.02)
    batcher = warmed(runner, refused, bound=30.0)
    runner.gate.clear()
    batcher.submit(KEY, list(range(25)), [1.0] * 25, Ticket(time.monotonic() + 600))  # ~0.5 s queued
    with pytest.raises(SonovecError) as caught:
        batcher.submit(KEY, ["hurried"], [1.0], Ticket(time.monotonic() + 0.1))
    assert caught.value.kind == ErrorKind.OVERLOADED
    assert refused == ["deadline"]
    batcher.submit(KEY, ["patient"], [1.0], Ticket(time.monotonic() + 60))  # the same queue: admitted
    runner.gate.set()
    batcher.stop()


def test_a_request_longer_than_the_bound_is_served_when_nothing_waits() -> None:
    batcher = warmed(Slow(0.001), [], bound=0.05)
    futures = batcher.submit(KEY, list(range(200)), [1.0] * 200, Ticket(time.monotonic() + 60))  # ~0.2 s
    assert len([f.result(timeout=10) for f in futures]) == 200
    batcher.stop()


def test_the_audio_seconds_cap_still_bounds_memory() -> None:
    refused: list[str] = []
    runner = Slow(0.0001)
    batcher = warmed(runner, refused, queue=10.0, bound=1e9)
    runner.gate.clear()
    batcher.submit(KEY, list(range(9)), [1.0] * 9, Ticket(time.monotonic() + 60))
    with pytest.raises(SonovecError) as caught:
        batcher.submit(KEY, ["x", "y"], [1.0, 1.0], Ticket(time.monotonic() + 60))
    assert caught.value.kind == ErrorKind.OVERLOADED
    assert refused == ["queue_cost"]
    runner.gate.set()
    batcher.stop()


def test_nothing_is_refused_by_wait_before_a_batch_was_measured() -> None:
    batcher = Batcher(
        Slow(0.0), max_batch_cost=2.0, max_wait_s=0.001, max_queue_cost=1e6, max_queue_wait_s=0.001
    )
    futures = batcher.submit(KEY, list(range(100)), [1.0] * 100, Ticket(time.monotonic() + 60))
    batcher.start()
    assert [f.result(timeout=10) for f in futures] == list(range(100))
    batcher.stop()


async def test_an_overloaded_service_refuses_before_decoding(make_service) -> None:  # type: ignore[no-untyped-def]
    """Over the wait bound a request is refused before its audio is decoded: bytes that are not
    audio at all get 429, not 415 (decoding them would have cost the cores the admitted work)."""
    import asyncio

    from audiofiles import encode, tone

    from sonovec.server.core import AudioSource, EmbedOptions

    service = make_service(fake_seconds_per_audio_second=0.25, max_queue_wait_s=1.0, max_batch_seconds=2.0,
                           cache_entries=0)
    clip = encode(tone(2.0, 48_000, 2, seed=1), 48_000, "wav")
    await service.embed(AudioSource(data=clip), EmbedOptions())  # measures the throughput (~4 x RT)
    assert service.batcher.throughput > 0
    long = encode(tone(12.0, 48_000, 2, seed=2), 48_000, "wav")  # ~3 s of work: over the 1 s bound
    running = asyncio.create_task(service.embed(AudioSource(data=long), EmbedOptions()))
    for _ in range(200):
        if service.batcher.projected_wait() > 1.0:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(SonovecError) as caught:
        await service.embed(AudioSource(data=b"these bytes are not audio at all"), EmbedOptions())
    assert caught.value.kind is ErrorKind.OVERLOADED and caught.value.retry_after >= 1
    await running
    with pytest.raises(SonovecError) as drained:  # with the queue drained, the same bytes are decoded
        await service.embed(AudioSource(data=b"these bytes are not audio at all"), EmbedOptions())
    assert drained.value.kind is ErrorKind.UNSUPPORTED
