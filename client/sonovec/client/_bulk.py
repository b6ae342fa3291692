"""``embed_many``: many recordings with bounded concurrency, retries, progress, and the server's limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from tqdm.auto import tqdm

from sonovec.client import _errors as kinds
from sonovec.client import _ops as ops
from sonovec.client import _rpc as rpc
from sonovec.client._audio import AudioData, AudioLike, size_of, to_audio
from sonovec.client._errors import SonovecClientError
from sonovec.client._retry import backoff_delay
from sonovec.client._types import Embedding, ServerInfo
from sonovec.v1 import sonovec_pb2 as spb

if TYPE_CHECKING:
    from sonovec.client._client import AsyncClient

PACK_BYTES = 8 << 20  # at most this much audio per EmbedMany request
PACK_COUNT = 32  # and at most this many recordings
Outcome: TypeAlias = Embedding | SonovecClientError
# gRPC EmbedMany: a request and its deadline in, results out as they arrive.
Stream: TypeAlias = Callable[[spb.EmbedManyRequest, float | None], AsyncIterator[spb.EmbedManyResponse]]


@dataclass(frozen=True)
class Job:
    """One ``embed_many`` call, as its plan yields it to the client."""

    audios: list[AudioLike]
    sample_rate: int | None
    options: dict[str, Any]  # Embed's: model, pooling, normalize, frames
    concurrency: int
    retries: int
    timeout: float | None
    progress: bool
    return_exceptions: bool


class BulkEmbed:
    """Runs a ``Job`` through ``client``'s public ``call``; ``stream`` is its transport's EmbedMany
    (None over REST, where each recording is its own request)."""

    def __init__(self, client: AsyncClient, job: Job, stream: Stream | None) -> None:
        self.client = client
        self.stream = stream
        self.audios = job.audios
        self.sample_rate = job.sample_rate
        self.options = job.options
        self.concurrency = max(1, job.concurrency)
        self.retries = job.retries
        self.timeout = job.timeout if job.timeout is not None else client.config.timeout
        self.progress = job.progress
        self.return_exceptions = job.return_exceptions
        self.results: list[Outcome | None] = [None] * len(job.audios)
        self.failed: SonovecClientError | None = None
        self._bar: Any = None
        self._slots = asyncio.Semaphore(self.concurrency)

    async def run(self) -> list[Any]:
        info = await self.client.call(ops.Info(), retries=self.retries)
        self.client.limits = info.limits
        units = self._plan(info)
        with tqdm(total=len(self.audios), disable=not self.progress, unit="rec", desc="embed") as bar:
            self._bar = bar
            bar.update(sum(r is not None for r in self.results))  # refused while planning
            pending = iter(units)
            stop_on_error = not self.return_exceptions
            workers = [self._worker(pending, stop_on_error) for _ in range(min(self.concurrency, len(units)))]
            await asyncio.gather(*workers)
        if stop_on_error:
            first = next((r for r in self.results if isinstance(r, SonovecClientError)), None)
            if first is not None:
                raise first
        return list(self.results)

    # ---- planning: what goes in which request ----

    def _plan(self, info: ServerInfo) -> list[list[int]]:
        """Refuse what is over the byte limit; over gRPC, pack small recordings into EmbedMany requests."""
        wire = self.client.config.wire
        packable = info.transport == "grpc"
        pack_bytes = PACK_BYTES
        if info.max_receive_message_bytes:
            pack_bytes = min(pack_bytes, info.max_receive_message_bytes - (64 << 10))
        pack_count = min(PACK_COUNT, info.limits.max_recordings)
        units: list[list[int]] = []
        pack: list[int] = []
        pack_size = 0
        for i, audio in enumerate(self.audios):
            size = self._size(i, audio, info.limits.max_request_bytes)
            if size is None:
                continue
            if not packable or size > min(wire.stream_bytes, pack_bytes):
                units.append([i])
                continue
            if pack and (len(pack) >= pack_count or pack_size + size > pack_bytes):
                units.append(pack)
                pack, pack_size = [], 0
            pack.append(i)
            pack_size += size
        if pack:
            units.append(pack)
        return units

    def _size(self, i: int, audio: AudioLike, limit: int) -> int | None:
        try:
            size = size_of(audio)
        except (OSError, TypeError) as exc:
            self.results[i] = SonovecClientError(kinds.INVALID, f"cannot read: {exc}", field=f"audios[{i}]")
            return None
        if size > limit:
            self.results[i] = SonovecClientError(
                kinds.TOO_LARGE,
                f"{size} bytes (refused by the client, not sent)",
                field=f"audios[{i}]",
                allowed=f"at most {limit} bytes (the server's max_request_bytes)",
            )
            return None
        return size

    # ---- running ----

    async def _worker(self, units: Iterator[list[int]], stop_on_error: bool) -> None:
        for unit in units:
            if stop_on_error and self.failed is not None:
                return
            await self._run_unit(unit)

    async def _run_unit(self, unit: list[int]) -> None:
        """Send ``unit`` (one recording, or a pack over gRPC); then retry each recording that met
        overload or unavailability on its own, so that retries spread out in time."""
        outcomes = await self._send(unit)
        await asyncio.gather(*(self._settle(i, outcomes[i]) for i in unit))

    async def _settle(self, i: int, outcome: Outcome) -> None:
        attempt = 0
        while isinstance(outcome, SonovecClientError) and outcome.retryable and attempt < self.retries:
            await asyncio.sleep(backoff_delay(attempt, outcome.retry_after, self.client.backoff))
            outcome = (await self._send([i]))[i]
            attempt += 1
        self._finish(i, outcome)

    def _finish(self, i: int, outcome: Outcome) -> None:
        self.results[i] = outcome
        if isinstance(outcome, SonovecClientError) and self.failed is None:
            self.failed = outcome
        self._bar.update(1)

    async def _send(self, indices: list[int]) -> dict[int, Outcome]:
        async with self._slots:  # at most ``concurrency`` requests in flight
            return await self._send_now(indices)

    async def _send_now(self, indices: list[int]) -> dict[int, Outcome]:
        audios: dict[int, AudioData] = {}
        outcomes: dict[int, Outcome] = {}
        for i in indices:
            try:
                audios[i] = await asyncio.to_thread(
                    to_audio, self.audios[i], self.sample_rate, f"audios[{i}]"
                )
            except (OSError, TypeError) as exc:
                outcomes[i] = SonovecClientError(kinds.INVALID, f"cannot read: {exc}", field=f"audios[{i}]")
            except SonovecClientError as exc:
                outcomes[i] = exc
        if len(audios) == 1 or (audios and self.stream is None):
            for i, audio in audios.items():
                outcomes[i] = await self._one(audio)
        elif audios:
            outcomes.update(await self._pack(audios))
        return outcomes

    async def _one(self, audio: AudioData) -> Outcome:
        op = ops.Embed(audio, **self.options)
        try:
            return await self.client.call(op, self.timeout, retries=0)
        except SonovecClientError as exc:
            return exc

    async def _pack(self, audios: dict[int, AudioData]) -> dict[int, Outcome]:
        """One EmbedMany request; results stream back in any order, each with its index."""
        order = list(audios)
        request = spb.EmbedManyRequest(
            recordings=[rpc.audio(audios[i]) for i in order],
            model=self.options["model"] or "",
            pooling=self.options["pooling"],
            normalize=self.options["normalize"],
            frames=self.options["frames"],
        )
        outcomes: dict[int, Outcome] = {}
        assert self.stream is not None
        try:
            async for reply in self.stream(request, self.timeout):
                index = order[reply.index]
                outcomes[index] = (
                    rpc.embedding(reply.result) if reply.HasField("result") else rpc.item_error(reply.error)
                )
        except SonovecClientError as exc:
            for i in order:
                outcomes.setdefault(i, exc)
        for i in order:
            outcomes.setdefault(
                i, SonovecClientError(kinds.INTERNAL, "no result for this recording in the stream")
            )
        return outcomes
