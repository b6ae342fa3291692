"""The core service: every transport and tool (REST, gRPC, the CLI) calls this and nothing else.

One request: ingest (decode, check, resample; in a worker thread, before queueing) -> cache
lookup -> windows -> batcher -> engine -> reassembly in window order -> pooling.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import soundfile

from sonovec.models import MODEL_SPECS, Backend, ModelSpec, Window, plan_windows
from sonovec.server import pooling, reassembly
from sonovec.server.audio import (
    SUPPORTED_FORMATS,
    AudioLimits,
    PcmFormat,
    Recording,
    canonical_digest,
    decode_audio,
    from_array,
)
from sonovec.server.batcher import Batcher, BatchKey, Ticket
from sonovec.server.budget import MemoryBudget, Reservation
from sonovec.server.cache import EmbeddingCache, cache_key
from sonovec.server.engine import DecodeIn, DecodeLatentsIn, EncodeIn, EncodeOut, Engine
from sonovec.server.errors import ErrorKind, SonovecError, invalid, not_found, too_large
from sonovec.server.metrics import Metrics
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)

# The memory-budget shares of the current request's decodes (released when it ends).
_decoded: contextvars.ContextVar[list[Reservation]] = contextvars.ContextVar("sonovec_decoded")

# The audio ``encoding`` field of both transports: "auto" (encoded bytes), or raw PCM.
_PCM_ENCODINGS: dict[str, Literal["f32le", "s16le"]] = {"pcm_f32le": "f32le", "pcm_s16le": "s16le"}
ENCODINGS = ("auto", *_PCM_ENCODINGS)
DEFAULT_BANDWIDTH = 6.0  # kbps: encode's default (both models have it)
DEFAULT_SEGMENT_SECONDS = 1.0  # self-similarity's default segment


@dataclass(frozen=True)
class AudioSource:
    """A recording as a transport received it: encoded bytes (WAV, FLAC, ...), raw PCM bytes with
    their format, or an array with its sample rate."""

    data: bytes | None = None
    pcm: PcmFormat | None = None
    array: np.ndarray | None = None
    sample_rate: int | None = None

    @classmethod
    def from_wire(
        cls, data: bytes, encoding: str, sample_rate: int | None, channels: int | None, field: str = "audio"
    ) -> AudioSource:
        """The audio fields of a REST or gRPC request: encoded bytes ("auto", or empty), or raw PCM
        with its sample rate and channels."""
        encoding = encoding or "auto"
        if encoding not in ENCODINGS:
            raise invalid(
                f"unknown encoding {encoding!r}", field=f"{field}.encoding", allowed=", ".join(ENCODINGS)
            )
        if encoding == "auto":
            return cls(data=data)
        if sample_rate is None or channels is None:
            raise invalid(
                "raw PCM needs sample_rate and channels",
                field=field,
                allowed="encoding pcm_f32le or pcm_s16le with sample_rate and channels",
            )
        pcm = PcmFormat(encoding=_PCM_ENCODINGS[encoding], sample_rate=sample_rate, channels=channels)
        return cls(data=data, pcm=pcm)


@dataclass(frozen=True)
class ModelInfo:
    """What produced a result. Part of every response, so embedding spaces never mix."""

    name: str
    backend: str
    device: str
    precision: str
    sample_rate: int
    channels: int
    frame_rate: int
    latent_dim: int
    bandwidths: tuple[float, ...]
    weights_fingerprint: str
    weights_source: str
    pretrained: bool
    warning: str | None


@dataclass(frozen=True)
class EmbedOptions:
    model: str | None = None
    pooling: str = "mean"  # "mean" [D] or "mean_std" [2D]
    normalize: bool = True  # L2-normalise the pooled vector
    frames: bool = False  # also return the latent frames
    timeout_s: float | None = None


@dataclass
class EmbedResult:
    model: ModelInfo
    vector: np.ndarray  # [D] or [2D] float32
    pooling: str
    normalized: bool
    duration_s: float
    num_windows: int
    cached: bool
    frames: np.ndarray | None = None  # [F, D] float32
    frame_times: np.ndarray | None = None  # [F] seconds from the start of the recording
    warnings: list[str] = field(default_factory=list)  # e.g. truncated audio, decoded in part


@dataclass
class EncodeResult:
    model: ModelInfo
    bandwidth: float
    codes: list[np.ndarray]  # per segment [K, F_s] int64 (one segment for unsegmented models)
    scales: list[float]  # per segment; 1.0 where the model does not normalise
    num_samples: int  # at the model's sample rate
    segment_stride: int  # samples between segments; 0 when unsegmented
    duration_s: float


@dataclass
class DecodeResult:
    model: ModelInfo
    audio: np.ndarray  # [C, T] float32 at the model's sample rate

    def wav_bytes(self, subtype: str = "PCM_16") -> bytes:
        buffer = io.BytesIO()
        soundfile.write(buffer, self.audio.T, self.model.sample_rate, format="WAV", subtype=subtype)
        return buffer.getvalue()


@dataclass
class LatentFrames:
    """A recording's continuous latents in the form the decoder takes them back (the latent lab).

    ``frames`` are ``embed``'s frames (``[F, D]``, window order: at 48 kHz each 1 s segment's
    frames in turn, ``num_frames(window)`` = 150 per full segment). ``scales``: one per segment,
    the RMS the 48 kHz model divided that segment by before encoding (decoding multiplies it back);
    ``[1.0]`` for the 24 kHz model, which does not normalise. ``num_samples``: the output length.
    """

    model: ModelInfo
    frames: np.ndarray  # [F, D] float32
    scales: np.ndarray  # [S] float32
    num_samples: int  # at the model's sample rate


@dataclass
class SimilarityResult:
    model: ModelInfo
    matrix: np.ndarray  # [N, N] cosine similarities
    vectors: np.ndarray  # [N, D] the L2-normalised pooled vectors compared


@dataclass
class SelfSimilarityResult:
    model: ModelInfo
    matrix: np.ndarray  # [S, S] cosine similarities between segments
    segment_seconds: float
    segment_starts_s: np.ndarray  # [S]


@dataclass(frozen=True)
class Ingested:
    """A recording ready for the batcher: decoded, checked, resampled, cut into its windows."""

    recording: Recording
    windows: list[Window]  # the window plan (plan_windows)
    items: list[EncodeIn]  # each window's samples, contiguous, with its left context in frames
    digest: str | None = None  # sha256 of the canonical PCM, when asked for (embeddings' cache key)


# The settings a client reads as the limits on input (and plans its requests by).
_PUBLISHED_LIMITS = (
    "max_request_bytes",
    "max_audio_seconds",
    "max_channels",
    "max_recordings",
    "max_queue_seconds",
    "request_timeout_s",
)


def published_limits(settings: Settings) -> dict[str, Any]:
    """The limits on input as both transports publish them (REST ``Limits`` in /v1/models, gRPC
    ``Limits`` in Models and Info): those settings, and the accepted formats."""
    limits: dict[str, Any] = {name: getattr(settings, name) for name in _PUBLISHED_LIMITS}
    largest_batch = max(batch_seconds(settings, name) for name in settings.models)  # per model, or set
    return {**limits, "max_batch_seconds": largest_batch, "formats": list(SUPPORTED_FORMATS)}


def batch_seconds(settings: Settings, model: str) -> float:
    """A model's batch budget: the setting, or else the model's own default."""
    return settings.max_batch_seconds or MODEL_SPECS[model].batch_seconds


def model_info(backend: Backend, precision: str) -> ModelInfo:
    spec = backend.spec
    return ModelInfo(
        name=spec.name,
        backend=backend.kind,
        device=backend.device,
        precision=precision,
        sample_rate=spec.sample_rate,
        channels=spec.channels,
        frame_rate=spec.frame_rate,
        latent_dim=spec.latent_dim,
        bandwidths=spec.bandwidths,
        weights_fingerprint=backend.weights.fingerprint,
        weights_source=backend.weights.source,
        pretrained=backend.weights.pretrained,
        warning=backend.weights.warning,
    )


class Service:
    def __init__(
        self,
        settings: Settings,
        backends: dict[str, Backend],
        *,
        metrics: Metrics,
        cache: EmbeddingCache,
    ) -> None:
        """Built by the runtime (``sonovec.server.runtime``), which loads the backends and the cache."""
        self.settings = settings
        self.backends = backends
        self.metrics = metrics
        self.cache = cache
        self.infos = {name: model_info(b, settings.precision) for name, b in backends.items()}
        self.limits = AudioLimits(
            max_bytes=settings.max_request_bytes,
            max_seconds=settings.max_audio_seconds,
            max_channels=settings.max_channels,
        )
        self.memory = MemoryBudget(
            settings.max_inflight_bytes,
            on_change=self.metrics.memory_inflight.set,
            on_refuse=lambda: self.metrics.refused.labels("memory").inc(),
        )
        self.metrics.memory_budget.set(settings.max_inflight_bytes)
        self.engine = Engine(backends)
        budgets = {name: batch_seconds(settings, name) for name in backends}
        self.batcher = Batcher(
            self.engine,
            max_batch_cost=lambda key: budgets[key.model],
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue_cost=settings.max_queue_seconds,
            on_batch=self.metrics.observe_batch,
            workers=settings.workers,
            max_queue_wait_s=settings.max_queue_wait_s,
            on_refuse=lambda reason: self.metrics.refused.labels(reason).inc(),
        )
        self.metrics.watch_queue(lambda: self.batcher.queued_cost, lambda: self.batcher.queued_jobs)
        self.metrics.projected_wait.set_function(self.batcher.projected_wait)
        self.metrics.throughput.set_function(lambda: self.batcher.throughput)
        for info in self.infos.values():
            self.metrics.weights.labels(
                info.name, info.backend, info.device, info.weights_fingerprint, str(info.pretrained).lower()
            ).set(1)
        self.draining = False

    # ---- life cycle (the runtime calls these) ----

    def start(self) -> None:
        """Start the batch workers and warm every model up (``Engine.warmup``: every graph shape)."""
        self.batcher.start()
        self.engine.warmup()

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new requests, let queued windows finish, stop the workers (blocking)."""
        self.draining = True
        self.batcher.stop(timeout)

    # ---- lookups ----

    def backend(self, name: str | None) -> Backend:
        name = name or self.settings.models[0]
        try:
            return self.backends[name]
        except KeyError:
            raise not_found(
                f"model {name!r} is not loaded", field="model", allowed=", ".join(self.backends)
            ) from None

    def info(self, backend: Backend) -> ModelInfo:
        return self.infos[backend.spec.name]

    def model(self, name: str | None) -> ModelInfo:
        """What ``name`` (None: the default model) is, or NOT_FOUND: the embedder's side of collections."""
        return self.info(self.backend(name))

    # ---- requests ----

    @asynccontextmanager
    async def request(self, timeout_s: float | None) -> AsyncIterator[Ticket]:
        """A request's ticket: its deadline, and cancellation of its queued windows on exit."""
        if self.draining:
            raise SonovecError(ErrorKind.UNAVAILABLE, "the service is draining", retry_after=1.0)
        if timeout_s is not None and timeout_s <= 0:
            raise invalid(f"timeout must be positive, got {timeout_s}", field="timeout_s")
        timeout = min(timeout_s or self.settings.request_timeout_s, self.settings.request_timeout_s)
        ticket = Ticket(time.monotonic() + timeout)
        held = _decoded.set([])
        try:
            yield ticket
        finally:
            ticket.cancel()  # drops any window still queued (error, disconnect, deadline)
            for reservation in _decoded.get():
                reservation.release()
            with contextlib.suppress(ValueError):  # ended in another context
                _decoded.reset(held)

    def _reserve_decoded(self) -> Callable[[int], None] | None:
        """A share of the memory budget for one decode, returned when its request ends; None
        outside a request (nothing would return it)."""
        reservations = _decoded.get(None)
        if reservations is None:
            return None
        reservation = self.memory.reservation("audio")
        reservations.append(reservation)
        return reservation.grow_to

    async def ingest(
        self, source: AudioSource, backend: Backend, field: str = "audio", *, digest: bool = False
    ) -> Ingested:
        """Decode, check, resample and cut into windows, in a worker thread (never on the loop);
        ``digest``: also the sha256 of the canonical PCM, for the cache key.

        An overloaded queue refuses the request first (``Batcher.check_wait``): decoding audio only
        to refuse it would take the cores from the work already admitted (a cache hit is refused
        too: its key needs the decode)."""
        self.batcher.check_wait(BatchKey(backend.spec.name, "encode"))
        return await asyncio.to_thread(self._ingest, source, backend, field, digest)

    def _ingest(self, source: AudioSource, backend: Backend, field: str, digest: bool) -> Ingested:
        return self.prepare(self._decode(source, backend, field), backend, digest=digest)

    def _decode(self, source: AudioSource, backend: Backend, field: str) -> Recording:
        spec = backend.spec
        reserve = self._reserve_decoded()
        if source.array is not None:
            if source.sample_rate is None:
                raise invalid("an array needs its sample rate", field=f"{field}.sample_rate")
            recording = from_array(
                source.array,
                source.sample_rate,
                target_rate=spec.sample_rate,
                target_channels=spec.channels,
                limits=self.limits,
                field=field,
                reserve=reserve,
            )
        elif source.data is not None:
            recording = decode_audio(
                source.data,
                target_rate=spec.sample_rate,
                target_channels=spec.channels,
                limits=self.limits,
                pcm=source.pcm,
                field=field,
                reserve=reserve,
            )
        else:
            raise invalid("no audio given", field=field, allowed="encoded audio bytes, raw PCM, or samples")
        return recording

    def prepare(self, recording: Recording, backend: Backend, *, digest: bool = False) -> Ingested:
        """A decoded recording cut into its windows (blocking: call it in a worker thread), with
        the sha256 of its PCM when ``digest`` (embeddings' cache key)."""
        spec = backend.spec
        windows = plan_windows(spec, recording.num_samples)
        items = [
            EncodeIn(np.ascontiguousarray(recording.samples[:, w.fed]), w.context // spec.hop_length)
            for w in windows
        ]
        return Ingested(recording, windows, items, canonical_digest(recording) if digest else None)

    async def embed(self, source: AudioSource, options: EmbedOptions, *, field: str = "audio") -> EmbedResult:
        _check_pooling(options.pooling)
        backend = self.backend(options.model)
        async with self.request(options.timeout_s) as ticket:
            ingested = await self.ingest(source, backend, field, digest=True)
            return await self.embed_ingested(ingested, backend, options, ticket)

    def embed_many(
        self, sources: Sequence[AudioSource], options: EmbedOptions
    ) -> AsyncIterator[tuple[int, EmbedResult | SonovecError]]:
        """Every recording at once (their windows batch together); yields ``(index, result or
        error)`` as each is ready. A bad recording fails only its own item; bad options, an
        unknown model or a count out of bounds fail the call (raised here, before any work)."""
        _check_pooling(options.pooling)
        self.backend(options.model)
        limit = self.settings.max_recordings
        if not 1 <= len(sources) <= limit:
            raise invalid(
                f"got {len(sources)} recordings", field="recordings", allowed=f"1 to {limit} recordings"
            )
        return self._embed_each(sources, options)

    async def _embed_each(
        self, sources: Sequence[AudioSource], options: EmbedOptions
    ) -> AsyncIterator[tuple[int, EmbedResult | SonovecError]]:
        async def one(index: int, source: AudioSource) -> tuple[int, EmbedResult | SonovecError]:
            try:
                return index, await self.embed(source, options, field=f"recordings[{index}]")
            except SonovecError as exc:
                return index, exc
            except Exception as exc:  # a bug: logged, and only this item fails
                log.exception("embed_many item %d failed", index)
                return index, SonovecError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}")

        tasks = [asyncio.ensure_future(one(i, source)) for i, source in enumerate(sources)]
        try:
            for next_done in asyncio.as_completed(tasks):
                yield await next_done
        finally:
            for task in tasks:
                task.cancel()

    async def embed_ingested(
        self, ingested: Ingested, backend: Backend, options: EmbedOptions, ticket: Ticket
    ) -> EmbedResult:
        spec = backend.spec
        assert ingested.digest is not None, "ingest(..., digest=True) for embeddings"
        key = cache_key(ingested.digest, spec.name, backend.weights.fingerprint, self.settings.precision)
        stats = None if options.frames else await self.cache.get(key)
        cached = stats is not None
        latents = None
        if stats is None:
            latents = await self._latents(ingested, backend, ticket)
            stats = _finite_output(latents.stats, "pooled statistics")
            await self.cache.put(key, stats)
        recording = ingested.recording
        vector = pooling.finish(stats, options.pooling, options.normalize)
        if options.normalize and not np.any(vector):
            raise _degenerate("an all-zero vector, which has no direction to normalise")
        result = EmbedResult(
            model=self.info(backend),
            vector=_finite_output(vector, "vector"),
            pooling=options.pooling,
            normalized=options.normalize,
            duration_s=recording.duration_s,
            num_windows=len(ingested.windows),
            cached=cached,
            warnings=list(recording.warnings),
        )
        if options.frames and latents is not None:
            result.frames = np.ascontiguousarray(latents.frames.T)
            result.frame_times = latents.frame_starts / spec.sample_rate
        return result

    async def encode(
        self,
        source: AudioSource,
        *,
        model: str | None,
        bandwidth: float = DEFAULT_BANDWIDTH,
        timeout_s: float | None = None,
    ) -> EncodeResult:
        backend = self.backend(model)
        spec = backend.spec
        try:
            spec.num_codebooks(bandwidth)
        except ValueError as exc:
            raise invalid(
                str(exc), field="bandwidth", allowed=", ".join(f"{b:g}" for b in spec.bandwidths)
            ) from None
        async with self.request(timeout_s) as ticket:
            ingested = await self.ingest(source, backend)
            latents = await self._latents(ingested, backend, ticket, bandwidth=bandwidth)
        recording = ingested.recording
        codes = [w.codes for w in latents.windows if w.codes is not None]
        scales = [w.scale for w in latents.windows]
        if not spec.segmented:
            codes, scales = [np.concatenate(codes, axis=1)], [1.0]
        return EncodeResult(
            model=self.info(backend),
            bandwidth=bandwidth,
            codes=codes,
            scales=scales,
            num_samples=recording.num_samples,
            segment_stride=spec.stride if spec.segmented else 0,
            duration_s=recording.duration_s,
        )

    async def decode(
        self,
        codes: Sequence[np.ndarray],
        scales: Sequence[float] | None,
        *,
        model: str | None,
        num_samples: int | None = None,
        timeout_s: float | None = None,
        made_at: tuple[int | None, int | None] = (None, None),
    ) -> DecodeResult:
        """Audio from codes. ``made_at``: the (sample rate, segment stride) an encode reply states,
        when the caller passes them on; each must be the model's."""
        backend = self.backend(model)
        spec = backend.spec
        _check_geometry(spec, *made_at)
        codes, scales, num_samples = _check_codes(
            backend, codes, scales, num_samples, self.settings.max_audio_seconds
        )
        items = _decode_windows(backend, codes, scales)
        async with self.request(timeout_s) as ticket:
            costs = [item.codes.shape[1] * spec.hop_length / spec.sample_rate for item in items]
            outputs = await self._run(BatchKey(spec.name, "decode"), items, costs, ticket)
        return await self._decoded(backend, outputs, num_samples, "the codes and scales", "scales")

    async def latents(
        self, source: AudioSource, *, model: str | None = None, timeout_s: float | None = None,
        field: str = "audio",
    ) -> LatentFrames:
        """A recording's latent frames with each segment's scale: what ``decode_latents`` takes."""
        backend = self.backend(model)
        async with self.request(timeout_s) as ticket:
            ingested = await self.ingest(source, backend, field)
            latents = await self._latents(ingested, backend, ticket)
        scales = [w.scale for w in latents.windows] if backend.spec.segmented else [1.0]
        return LatentFrames(
            self.info(backend),
            np.ascontiguousarray(latents.frames.T),
            np.asarray(scales, np.float32),
            ingested.recording.num_samples,
        )

    async def decode_latents(
        self,
        frames: np.ndarray,
        scales: Sequence[float] | None,
        *,
        model: str | None,
        num_samples: int | None = None,
        bandwidth: float | None = None,
        timeout_s: float | None = None,
        field: str = "latents",
    ) -> DecodeResult:
        """Audio from continuous latent frames ``[F, D]`` through the decoder, the quantizer skipped;
        with ``bandwidth``, re-quantized at it first (what the codec would keep). ``scales``: one per
        segment (48 kHz; None: 1.0 each, i.e. every segment at the level of normalised input)."""
        backend = self.backend(model)
        spec = backend.spec
        if not spec.decodes:
            raise invalid(f"{spec.name} has no decoder", field="model", allowed="an EnCodec model")
        geometry = check_latents(spec, frames, scales, num_samples, self.settings.max_audio_seconds, field)
        if bandwidth is not None and bandwidth not in spec.bandwidths:
            raise invalid(
                f"bandwidth {bandwidth:g} kbps", field="bandwidth",
                allowed=", ".join(f"{b:g}" for b in spec.bandwidths) or "none: this model has no quantizer",
            )
        items = _decode_latent_windows(spec, geometry)
        async with self.request(timeout_s) as ticket:
            costs = [item.latents.shape[1] * spec.hop_length / spec.sample_rate for item in items]
            key = BatchKey(spec.name, "decode_latents", bandwidth or 0.0)
            outputs = await self._run(key, items, costs, ticket)
        return await self._decoded(backend, outputs, geometry.num_samples, "the latents", "latents")

    async def _decoded(
        self, backend: Backend, outputs: list[np.ndarray], num_samples: int, what: str, field: str
    ) -> DecodeResult:
        """Decoded windows joined (in a worker thread), refused when not finite."""
        spec = backend.spec
        stride = spec.stride if spec.segmented else None
        audio = await asyncio.to_thread(reassembly.join_audio, outputs, stride, num_samples)
        if not np.all(np.isfinite(audio)):
            raise invalid(f"{what} decode to non-finite audio", field=field,
                          allowed=f"{what} as encode returns them (finite audio out)")
        return DecodeResult(self.info(backend), audio)

    async def similarity(self, sources: Sequence[AudioSource], options: EmbedOptions) -> SimilarityResult:
        limit = self.settings.max_recordings
        if not 2 <= len(sources) <= limit:
            raise invalid(
                f"got {len(sources)} recordings", field="recordings", allowed=f"2 to {limit} recordings"
            )
        _check_pooling(options.pooling)
        backend = self.backend(options.model)
        unpooled = EmbedOptions(options.model, options.pooling, normalize=True)
        async with self.request(options.timeout_s) as ticket:
            ingested = await asyncio.gather(
                *(
                    self.ingest(s, backend, field=f"recordings[{i}]", digest=True)
                    for i, s in enumerate(sources)
                )
            )
            results = await asyncio.gather(
                *(self.embed_ingested(r, backend, unpooled, ticket) for r in ingested)
            )
        vectors = np.stack([r.vector for r in results])
        return SimilarityResult(self.info(backend), pooling.cosine_matrix(vectors), vectors)

    async def self_similarity(
        self,
        source: AudioSource,
        *,
        segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> SelfSimilarityResult:
        backend = self.backend(model)
        spec = backend.spec
        hop_seconds = spec.hop_length / spec.sample_rate
        if not hop_seconds <= segment_seconds <= 600:
            raise invalid(
                f"segment length {segment_seconds} s",
                field="segment_seconds",
                allowed=f"{hop_seconds:g} s (one latent frame) to 600 s",
            )
        async with self.request(timeout_s) as ticket:
            latents = await self._latents(await self.ingest(source, backend), backend, ticket)
        segment_samples = max(1, round(segment_seconds * spec.sample_rate))
        means, segments = pooling.segment_means(latents.frames, latents.frame_starts, segment_samples)
        if len(segments) > 4096:
            raise too_large(
                f"{len(segments)} segments", field="segment_seconds", allowed="at most 4096 segments"
            )
        return SelfSimilarityResult(
            self.info(backend), pooling.cosine_matrix(means), segment_seconds, segments * segment_seconds
        )

    # ---- windows through the batcher ----

    async def _latents(
        self,
        ingested: Ingested,
        backend: Backend,
        ticket: Ticket,
        bandwidth: float | None = None,
    ) -> reassembly.Latents:
        """The windows through the batcher, reassembled in window order (in a worker thread: the
        concatenation and the statistics scale with the recording's length)."""
        spec = backend.spec
        key = BatchKey(spec.name, "quantize" if bandwidth is not None else "encode", bandwidth or 0.0)
        costs = [item.audio.shape[-1] / spec.sample_rate for item in ingested.items]
        outputs: list[EncodeOut] = await self._run(key, ingested.items, costs, ticket)
        latents = await asyncio.to_thread(reassembly.latents, spec.hop_length, ingested.windows, outputs)
        _finite_output(latents.frames, "latents")
        return latents

    async def _run(self, key: BatchKey, items: list[Any], costs: list[float], ticket: Ticket) -> list[Any]:
        futures: list[Future[Any]] = self.batcher.submit(key, items, costs, ticket)
        remaining = ticket.deadline - time.monotonic()
        try:
            return list(await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, futures)), remaining))
        except TimeoutError:
            raise SonovecError(
                ErrorKind.DEADLINE, "request deadline passed before the model finished"
            ) from None


def _degenerate(what: str) -> SonovecError:
    return invalid(
        f"the model gave {what} for this recording",
        field="audio",
        allowed="audio within the documented sample range (|x| <= 100, finite), not silent",
    )


def _finite_output(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` if every value is finite; else the request fails (nothing non-finite is returned,
    cached or stored)."""
    if not np.all(np.isfinite(array)):
        raise _degenerate(f"non-finite {what}")
    return array


def _check_pooling(name: str) -> None:
    if name not in pooling.POOLINGS:
        raise invalid(f"unknown pooling {name!r}", field="pooling", allowed=", ".join(pooling.POOLINGS))


def _check_geometry(spec: ModelSpec, sample_rate: int | None, segment_stride: int | None) -> None:
    stride = spec.stride if spec.segmented else 0
    if sample_rate is not None and sample_rate != spec.sample_rate:
        raise invalid(
            f"codes made at {sample_rate} Hz",
            field="sample_rate",
            allowed=f"{spec.sample_rate} ({spec.name})",
        )
    if segment_stride is not None and segment_stride != stride:
        raise invalid(
            f"segment stride {segment_stride}", field="segment_stride", allowed=f"{stride} ({spec.name})"
        )


def _check_codes(
    backend: Backend,
    codes: Sequence[np.ndarray],
    scales: Sequence[float] | None,
    num_samples: int | None,
    max_seconds: float,
) -> tuple[list[np.ndarray], list[float], int]:
    """Validate codes for ``decode``; returns them as int64 arrays, the scales, and the length."""
    spec = backend.spec
    arrays = _check_code_values(spec, codes)
    longest = _check_code_frames(spec, arrays)
    if longest / spec.sample_rate > max_seconds:
        raise too_large(
            f"codes decode to {longest / spec.sample_rate:.0f} s",
            field="codes",
            allowed=f"at most {max_seconds:g} s",
        )
    scales = list(scales) if scales else [1.0] * len(arrays)
    if len(scales) != len(arrays) or not all(math.isfinite(s) and s > 0 for s in scales):
        raise invalid(
            f"{len(scales)} scales for {len(arrays)} segments, or one not positive",
            field="scales",
            allowed="one positive finite scale per segment",
        )
    num_samples = longest if num_samples is None else num_samples
    if not longest - spec.hop_length < num_samples <= longest:
        raise invalid(
            f"num_samples {num_samples} does not match the codes",
            field="num_samples",
            allowed=f"{longest - spec.hop_length + 1}..{longest}",
        )
    return [a.astype(np.int64) for a in arrays], [float(s) for s in scales], num_samples


def _check_code_values(spec: ModelSpec, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One ``[K, F]`` integer array per segment, K of one of the model's bandwidths, in the codebook."""
    allowed_k = sorted(spec.num_codebooks(b) for b in spec.bandwidths)
    shape_rule = f"one [K, F] array per segment, K in {allowed_k}, integers 0..{spec.codebook_size - 1}"
    arrays = [np.asarray(c) for c in codes]
    if not arrays:
        raise invalid("no codes given", field="codes", allowed=shape_rule)
    ks = {a.shape[0] if a.ndim == 2 else -1 for a in arrays}
    if len(ks) != 1 or ks.pop() not in allowed_k:
        raise invalid(
            f"code shapes {[a.shape for a in arrays][:4]} fit no bandwidth of {spec.name}",
            field="codes",
            allowed=shape_rule,
        )
    for i, a in enumerate(arrays):
        integral = np.issubdtype(a.dtype, np.integer)
        if a.size and (not integral or a.min() < 0 or a.max() >= spec.codebook_size):
            raise invalid(f"segment {i} has codes outside the codebook", field="codes", allowed=shape_rule)
    return arrays


def _check_code_frames(spec: ModelSpec, arrays: list[np.ndarray]) -> int:
    """Frames per segment must be what ``encode`` makes; returns the longest output it decodes to."""
    if not spec.segmented:
        if len(arrays) != 1:
            raise invalid(
                f"{spec.name} codes are one segment, got {len(arrays)}", field="codes", allowed="one segment"
            )
        return arrays[0].shape[1] * spec.hop_length
    full = spec.num_frames(spec.window)
    for i, a in enumerate(arrays):
        last = i == len(arrays) - 1
        if not (0 < a.shape[1] <= full) or (not last and a.shape[1] != full):
            raise invalid(
                f"segment {i} has {a.shape[1]} frames",
                field="codes",
                allowed=f"{full} frames per segment, the last 1..{full}",
            )
    return spec.stride * (len(arrays) - 1) + arrays[-1].shape[1] * spec.hop_length


def _decode_windows(backend: Backend, codes: list[np.ndarray], scales: list[float]) -> list[DecodeIn]:
    """Segments decode alone (48 kHz); one long code stream is cut into chunks with left context."""
    spec = backend.spec
    if spec.segmented:
        return [DecodeIn(c, s, 0) for c, s in zip(codes, scales, strict=True)]
    hop = spec.hop_length
    stream = codes[0]  # the same chunks, with the same left context, as the encoder's window plan
    return [
        DecodeIn(stream[:, w.fed.start // hop : w.fed.stop // hop], 1.0, w.context)
        for w in plan_windows(spec, stream.shape[1] * hop)
    ]


@dataclass(frozen=True)
class LatentGeometry:
    """Checked latents: ``[D, F]`` frames, one scale per segment, the output length."""

    frames: np.ndarray  # [D, F] float32
    scales: list[float]
    num_samples: int


def latent_segments(spec: ModelSpec, num_frames: int) -> list[slice]:
    """The frame slices of each segment (48 kHz: 150 frames each, the last 1..150); one otherwise."""
    if not spec.segmented:
        return [slice(0, num_frames)]
    full = spec.num_frames(spec.window)
    return [slice(start, min(start + full, num_frames)) for start in range(0, num_frames, full)]


def check_latents(
    spec: ModelSpec,
    frames: np.ndarray,
    scales: Sequence[float] | None,
    num_samples: int | None,
    max_seconds: float,
    field: str = "latents",
) -> LatentGeometry:
    """Validate latent frames ``[F, D]`` for decoding; INVALID (or TOO_LARGE) naming the rule broken."""
    array = np.asarray(frames)
    if array.ndim != 2 or array.shape[1] != spec.latent_dim or array.shape[0] == 0:
        raise invalid(f"frames of shape {array.shape}", field=f"{field}.frames",
                      allowed=f"[F, {spec.latent_dim}] with F > 0 ({spec.name})")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise invalid("frames hold non-finite values", field=f"{field}.frames", allowed="finite numbers")
    segments = latent_segments(spec, array.shape[0])
    longest = (spec.stride * (len(segments) - 1) if spec.segmented else 0) + (
        segments[-1].stop - segments[-1].start
    ) * spec.hop_length
    if longest / spec.sample_rate > max_seconds:
        raise too_large(f"latents decode to {longest / spec.sample_rate:.0f} s", field=f"{field}.frames",
                        allowed=f"at most {max_seconds:g} s")
    given = [1.0] * len(segments) if scales is None or len(scales) == 0 else [float(s) for s in scales]
    if len(given) != len(segments) or not all(math.isfinite(s) and s > 0 for s in given):
        raise invalid(f"{len(given)} scales for {len(segments)} segments, or one not positive",
                      field=f"{field}.scales", allowed=f"{len(segments)} positive finite scales")
    num_samples = longest if num_samples is None else int(num_samples)
    if not longest - spec.hop_length < num_samples <= longest:
        raise invalid(f"num_samples {num_samples} does not match {array.shape[0]} frames",
                      field=f"{field}.num_samples", allowed=f"{longest - spec.hop_length + 1}..{longest}")
    return LatentGeometry(np.ascontiguousarray(array.T, dtype=np.float32), given, num_samples)


def _decode_latent_windows(spec: ModelSpec, latents: LatentGeometry) -> list[DecodeLatentsIn]:
    """As ``_decode_windows``, for latents: a segment each (48 kHz), or chunks with left context."""
    frames = latents.frames
    if spec.segmented:
        return [
            DecodeLatentsIn(np.ascontiguousarray(frames[:, seg]), scale, 0)
            for seg, scale in zip(latent_segments(spec, frames.shape[1]), latents.scales, strict=True)
        ]
    hop = spec.hop_length
    return [
        DecodeLatentsIn(frames[:, w.fed.start // hop : w.fed.stop // hop].copy(), 1.0, w.context)
        for w in plan_windows(spec, frames.shape[1] * hop)
    ]
