"""``Client`` (sync) and ``AsyncClient``: one API over REST and gRPC, picked by the URL scheme.

Every method is written once, as a plan (see ``_plan``) in ``_Api`` or ``_CollectionsApi``: it
checks its arguments, yields each ``Call`` (an op and its deadline) or the ``embed_many`` job it
needs, and returns the result. ``Client`` and ``Collections`` run plans blocking, ``AsyncClient``
and ``AsyncCollections`` as coroutines; each adds only its transport and how it runs one step.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import os
import time
from collections.abc import Coroutine, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

from sonovec.client import _bulk
from sonovec.client import _errors as kinds
from sonovec.client import _lab as lab
from sonovec.client import _ops as ops
from sonovec.client._audio import AudioData, AudioLike, to_audio
from sonovec.client._errors import SonovecClientError
from sonovec.client._plan import Awaiting, Blocking, Plan, api
from sonovec.client._retry import backoff_delay
from sonovec.client._transport import (
    AsyncGrpcTransport,
    AsyncHttpTransport,
    Config,
    GrpcTransport,
    HttpTransport,
)
from sonovec.client._types import (
    AddResult,
    Classification,
    Codes,
    Collection,
    DecodedAudio,
    Embedding,
    IndexSpec,
    Item,
    Limits,
    ModelsInfo,
    NewItem,
    ProbeInfo,
    SearchResult,
    SelfSimilarity,
    ServerInfo,
    Similarity,
    SpaceClaim,
)

T = TypeVar("T")
Described = TypeVar("Described", ModelsInfo, ServerInfo)


class Call(NamedTuple):
    """A step of a plan: run ``op`` (with retries) within ``timeout`` (None: the client's)."""

    op: ops.Op[Any]
    timeout: float | None = None


def _call(op: ops.Op[T], timeout: float | None = None) -> Plan[T]:
    """The plan of one op, for plans to use: ``result = yield from _call(op)``."""
    result: T = yield Call(op, timeout)
    return result


class _Api:
    """What ``Client`` and ``AsyncClient`` share: options, checks, and every method as a plan."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_message_bytes: int = 1 << 30,
        stream_bytes: int = 4 << 20,
        chunk_bytes: int = 1 << 20,
        verify: bool = True,
    ) -> None:
        """``url``: ``http(s)://host:port`` for REST, ``grpc(s)://host:port`` for gRPC.
        ``timeout``: default deadline of a call, seconds (sent to the server too). ``retries``:
        how often an overloaded or unavailable call is retried (with backoff, honouring
        Retry-After). ``api_key``: sent with every call (the SONOVEC_API_KEY environment
        variable when None). gRPC only: ``max_message_bytes`` (both directions), and audio
        above ``stream_bytes`` goes through EmbedStream in ``chunk_bytes`` pieces."""
        api_key = api_key if api_key is not None else os.environ.get("SONOVEC_API_KEY") or None
        self.config = Config(
            url, api_key, timeout, max_message_bytes, ops.Wire(stream_bytes, chunk_bytes), verify
        )
        self.transport = self.config.endpoint.transport
        self.retries = retries
        self.backoff = backoff
        self.limits: Limits | None = None  # the server's, once models() or info() has been called

    @property
    def url(self) -> str:
        return self.config.url

    def _deadline(self, timeout: float | None) -> float | None:
        return self.config.timeout if timeout is None else timeout

    def _checked(self, audio: AudioLike, sample_rate: int | None, field: str = "audio") -> AudioData:
        """The audio as sent; refused here when the server's published byte limit is known and exceeded."""
        data = to_audio(audio, sample_rate, field)
        if self.limits is not None and len(data.data) > self.limits.max_request_bytes:
            raise SonovecClientError(
                kinds.TOO_LARGE,
                f"audio is {len(data.data)} bytes (refused by the client, not sent)",
                field=field,
                allowed=f"at most {self.limits.max_request_bytes} bytes (the server's limit)",
            )
        return data

    def _recordings(self, recordings: Sequence[AudioLike], sample_rate: int | None) -> list[AudioData]:
        return [self._checked(a, sample_rate, f"recordings[{i}]") for i, a in enumerate(recordings)]

    def _remember_limits(self, result: Described) -> Described:
        """Keep the server's limits from a models() or info() reply (checked before sending audio)."""
        self.limits = result.limits
        return result

    def _retry_delay(self, err: SonovecClientError, attempt: int, retries: int | None) -> float | None:
        """Seconds to wait before retrying a call that failed ``attempt + 1`` times; None when
        ``err`` is not worth retrying (not overload or unavailability) or the retries are spent."""
        attempts = self.retries if retries is None else retries
        if not err.retryable or attempt >= attempts:
            return None
        return backoff_delay(attempt, err.retry_after, self.backoff)

    def _query(
        self,
        audio: AudioLike | None,
        id: str | None,
        vector: np.ndarray | None,
        space: SpaceClaim | None,
        sample_rate: int | None,
    ) -> ops.Query:
        data = None if audio is None else self._checked(audio, sample_rate)
        return ops.Query(data, id, None if vector is None else np.asarray(vector, np.float32), space)

    def _codes(
        self,
        codes: Codes | Sequence[np.ndarray],
        scales: Sequence[float] | None,
        model: str | None,
        num_samples: int | None,
        subtype: str,
    ) -> ops.Decode:
        if isinstance(codes, Codes):
            return ops.Decode(
                codes.segments,
                scales or codes.scales,
                model or codes.model.name,
                num_samples or codes.num_samples,
                subtype,
            )
        segments = list(codes)
        return ops.Decode(
            segments, list(scales) if scales else [1.0] * len(segments), model, num_samples, subtype
        )

    # ---- the API: each method once, run by Client and by AsyncClient ----

    @api
    def embed(
        self,
        audio: AudioLike,
        *,
        sample_rate: int | None = None,
        model: str | None = None,
        pooling: str = "mean",
        normalize: bool = True,
        frames: bool = False,
        timeout: float | None = None,
    ) -> Plan[Embedding]:
        """One recording's pooled embedding ([D] for "mean", [2D] for "mean_std"); frames on request."""
        op = ops.Embed(self._checked(audio, sample_rate), model, pooling, normalize, frames)
        return (yield from _call(op, timeout))

    @api
    def encode(
        self,
        audio: AudioLike,
        *,
        sample_rate: int | None = None,
        model: str | None = None,
        bandwidth: float = 6.0,
        timeout: float | None = None,
    ) -> Plan[Codes]:
        """RVQ codes per segment at ``bandwidth`` kbps, with each segment's scale."""
        return (yield from _call(ops.Encode(self._checked(audio, sample_rate), model, bandwidth), timeout))

    @api
    def decode(
        self,
        codes: Codes | Sequence[np.ndarray],
        *,
        scales: Sequence[float] | None = None,
        model: str | None = None,
        num_samples: int | None = None,
        subtype: str = "PCM_16",
        timeout: float | None = None,
    ) -> Plan[DecodedAudio]:
        """Audio from codes: an ``encode`` result as it is, or [K, F] arrays (+ scales)."""
        return (yield from _call(self._codes(codes, scales, model, num_samples, subtype), timeout))

    @api
    def similarity(
        self,
        recordings: Sequence[AudioLike],
        *,
        sample_rate: int | None = None,
        model: str | None = None,
        pooling: str = "mean",
        timeout: float | None = None,
    ) -> Plan[Similarity]:
        """[N, N] cosine similarities between recordings."""
        op = ops.SimilarityOp(self._recordings(recordings, sample_rate), model, pooling)
        return (yield from _call(op, timeout))

    @api
    def self_similarity(
        self,
        audio: AudioLike,
        *,
        sample_rate: int | None = None,
        segment_seconds: float = 1.0,
        model: str | None = None,
        timeout: float | None = None,
    ) -> Plan[SelfSimilarity]:
        """A recording's segment-by-segment similarity matrix."""
        op = ops.SelfSimilarityOp(self._checked(audio, sample_rate), segment_seconds, model)
        return (yield from _call(op, timeout))

    @api
    def classify(
        self,
        audio: AudioLike | None = None,
        *,
        collection: str,
        id: str | None = None,
        vector: np.ndarray | None = None,
        space: SpaceClaim | None = None,
        sample_rate: int | None = None,
        k: int = 10,
        weighting: str = "distance",
        classes: Sequence[str] | None = None,
        probe: str | None = None,
        version: int | None = None,
        top: int = 5,
        timeout: float | None = None,
    ) -> Plan[Classification]:
        """Top labels for a recording, a stored item (``id``) or a ``vector``: a vote of the ``k``
        nearest labelled items in ``collection`` ("distance" or "uniform" weighting), or a probe."""
        query = self._query(audio, id, vector, space, sample_rate)
        op = ops.Classify(collection, query, k, weighting, classes, probe, version, top)
        return (yield from _call(op, timeout))

    @api
    def models(self) -> Plan[ModelsInfo]:
        """What is loaded, its weights, and the limits on input."""
        return self._remember_limits((yield from _call(ops.Models())))

    @api
    def info(self) -> Plan[ServerInfo]:
        """The server's limits (and, over gRPC, its message size limits and version)."""
        return self._remember_limits((yield from _call(ops.Info())))

    @api
    def embed_many(
        self,
        audios: Sequence[AudioLike],
        *,
        sample_rate: int | None = None,
        model: str | None = None,
        pooling: str = "mean",
        normalize: bool = True,
        frames: bool = False,
        concurrency: int = 8,
        progress: bool = True,
        retries: int = 8,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> Plan[list[Any]]:
        """Embed many recordings, results in input order.

        At most ``concurrency`` requests in flight; a tqdm progress bar; overloaded or unavailable
        calls retried up to ``retries`` times with backoff, honouring Retry-After. Work is fitted to
        the server's published limits: recordings over its byte limit are refused without being
        sent; over gRPC, small recordings travel together in EmbedMany requests (up to
        max_recordings and the message size limit) and large ones through EmbedStream.

        With ``return_exceptions`` a failed recording leaves its ``SonovecClientError`` in the
        list; otherwise the first failure is raised once in-flight requests finish. ``Client``
        runs it on an ``AsyncClient`` with its options, on a private event loop in a worker thread."""
        options = {"model": model, "pooling": pooling, "normalize": normalize, "frames": frames}
        job = _bulk.Job(
            list(audios), sample_rate, options, concurrency, retries, timeout, progress, return_exceptions
        )
        return (yield job)

    # ---- the latent lab (docs/lab.md): inputs are recordings or Latents from a previous result ----

    def _lab_in(self, value: AudioLike | lab.Latents, sample_rate: int | None, field: str) -> lab.LabIn:
        return value if isinstance(value, lab.Latents) else self._checked(value, sample_rate, field)

    @api
    def lab_latents(
        self,
        audio: AudioLike,
        *,
        sample_rate: int | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> Plan[lab.Latents]:
        """A recording's latent frames [F, D] with each segment's scale: the start of a chain."""
        fields = {"input": self._lab_in(audio, sample_rate, "input"), "model": model}
        return (yield from _call(lab.LabOp("latents", fields, lab.rest_latents, lab.rpc_latents), timeout))

    @api
    def lab_decode(
        self,
        latents: lab.Latents,
        *,
        model: str | None = None,
        bandwidth: float | None = None,
        subtype: str = "PCM_16",
        timeout: float | None = None,
    ) -> Plan[lab.LabAudio]:
        """Latents -> audio through the decoder, no quantizer (re-quantized at ``bandwidth`` if given)."""
        op = lab.audio_op("decode", {"latents": latents}, model or latents.model or None, bandwidth, subtype)
        return (yield from _call(op, timeout))

    @api
    def lab_interpolate(
        self,
        a: AudioLike | lab.Latents,
        b: AudioLike | lab.Latents,
        *,
        t: float = 0.5,
        sample_rate: int | None = None,
        model: str | None = None,
        bandwidth: float | None = None,
        subtype: str = "PCM_16",
        timeout: float | None = None,
    ) -> Plan[lab.LabAudio]:
        """``(1 - t) a + t b`` frame by frame over the frames both share, decoded."""
        fields = {"a": self._lab_in(a, sample_rate, "a"), "b": self._lab_in(b, sample_rate, "b"), "t": t}
        return (yield from _call(lab.audio_op("interpolate", fields, model, bandwidth, subtype), timeout))

    @api
    def lab_path(
        self,
        a: AudioLike | lab.Latents,
        b: AudioLike | lab.Latents,
        *,
        steps: int = 5,
        sample_rate: int | None = None,
        model: str | None = None,
        bandwidth: float | None = None,
        subtype: str = "PCM_16",
        timeout: float | None = None,
    ) -> Plan[list[lab.LabAudio]]:
        """``steps`` interpolations from a (t = 0) to b (t = 1), each decoded."""
        fields = {
            "a": self._lab_in(a, sample_rate, "a"),
            "b": self._lab_in(b, sample_rate, "b"),
            "steps": steps,
        }
        op = lab.LabOp(
            "path",
            fields,
            lab.rest_path,
            lab.rpc_path,
            {"model": model, "bandwidth": bandwidth, "subtype": subtype},
        )
        return (yield from _call(op, timeout))

    @api
    def lab_mix(
        self,
        inputs: Sequence[AudioLike | lab.Latents],
        weights: Sequence[float],
        *,
        sample_rate: int | None = None,
        model: str | None = None,
        bandwidth: float | None = None,
        subtype: str = "PCM_16",
        timeout: float | None = None,
    ) -> Plan[lab.LabAudio]:
        """A weighted mix (weights >= 0, normalised to sum 1) of several inputs' frames, decoded."""
        given = [self._lab_in(x, sample_rate, f"inputs[{i}]") for i, x in enumerate(inputs)]
        fields = {"inputs": given, "weights": lab.weights(weights)}
        return (yield from _call(lab.audio_op("mix", fields, model, bandwidth, subtype), timeout))

    @api
    def lab_offset(
        self,
        a: AudioLike | lab.Latents,
        b: AudioLike | lab.Latents,
        c: AudioLike | lab.Latents,
        *,
        alpha: float = 1.0,
        sample_rate: int | None = None,
        model: str | None = None,
        bandwidth: float | None = None,
        subtype: str = "PCM_16",
        timeout: float | None = None,
    ) -> Plan[lab.LabAudio]:
        """``c + alpha (mean_t a - mean_t b)``, decoded (c's length and scales)."""
        fields = {n: self._lab_in(x, sample_rate, n) for n, x in (("a", a), ("b", b), ("c", c))}
        op = lab.audio_op("offset", {**fields, "alpha": alpha}, model, bandwidth, subtype)
        return (yield from _call(op, timeout))

    @api
    def lab_style(
        self,
        content: AudioLike | lab.Latents,
        style: AudioLike | lab.Latents,
        *,
        amount: float = 1.0,
        sample_rate: int | None = None,
        model: str | None = None,
        bandwidth: float | None = None,
        subtype: str = "PCM_16",
        timeout: float | None = None,
    ) -> Plan[lab.LabAudio]:
        """Content's frames moved to style's per-dimension frame mean and std, decoded."""
        fields = {
            "content": self._lab_in(content, sample_rate, "content"),
            "style": self._lab_in(style, sample_rate, "style"),
            "amount": amount,
        }
        return (yield from _call(lab.audio_op("style", fields, model, bandwidth, subtype), timeout))

    @api
    def lab_sensitivity(
        self,
        audio: AudioLike | lab.Latents,
        *,
        reference: Sequence[AudioLike | lab.Latents] = (),
        dims: Sequence[int] | None = None,
        k: float = 2.0,
        listen: int = 3,
        sample_rate: int | None = None,
        model: str | None = None,
        bandwidth: float | None = None,
        timeout: float | None = None,
    ) -> Plan[lab.LabAnalysis]:
        """Each dimension moved by +-k std (over ``reference``), decoded and measured; table, heat
        map PNG, and the +k WAVs of the ``listen`` top-ranked dimensions."""
        fields = {
            "input": self._lab_in(audio, sample_rate, "input"),
            "reference": [self._lab_in(x, sample_rate, f"reference[{i}]") for i, x in enumerate(reference)],
            "dims": None if dims is None else [int(d) for d in dims],
            "k": k,
            "listen": listen,
        }
        return (yield from _call(lab.analysis_op("sensitivity", fields, model, bandwidth), timeout))

    @api
    def lab_ablation(
        self,
        audio: AudioLike | lab.Latents,
        *,
        mode: str = "zero",
        dims: Sequence[int] | None = None,
        sample_rate: int | None = None,
        model: str | None = None,
        bandwidth: float | None = None,
        timeout: float | None = None,
    ) -> Plan[lab.LabAnalysis]:
        """Each dimension zeroed (or set to its mean), decoded and compared with the whole decode."""
        fields = {
            "input": self._lab_in(audio, sample_rate, "input"),
            "mode": mode,
            "dims": None if dims is None else [int(d) for d in dims],
        }
        return (yield from _call(lab.analysis_op("ablation", fields, model, bandwidth), timeout))

    @api
    def lab_statistics(
        self,
        inputs: Sequence[AudioLike | lab.Latents],
        *,
        sample_rate: int | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> Plan[lab.LabAnalysis]:
        """Per-dimension mean/std/range, correlation and PCA explained variance of the inputs' frames."""
        fields = {
            "inputs": [self._lab_in(x, sample_rate, f"inputs[{i}]") for i, x in enumerate(inputs)],
            "model": model,
        }
        return (
            yield from _call(lab.LabOp("statistics", fields, lab.rest_analysis, lab.rpc_analysis), timeout)
        )


class Client(_Api, Blocking):
    """Synchronous client. ``with Client("grpc://localhost:50051") as c: c.embed("a.wav").vector``"""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._options = options
        self._transport = (
            HttpTransport(self.config) if self.transport == "http" else GrpcTransport(self.config)
        )
        self.collections = Collections(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def call(self, op: ops.Op[T], timeout: float | None = None, retries: int | None = None) -> T:
        """Run one op, retrying overload and unavailability up to ``retries`` times."""
        attempt = 0
        while True:
            try:
                return self._transport.call(op, self._deadline(timeout))
            except SonovecClientError as err:
                delay = self._retry_delay(err, attempt, retries)
                if delay is None:
                    raise
                time.sleep(delay)
                attempt += 1

    def _step(self, step: Call | _bulk.Job) -> Any:
        if isinstance(step, _bulk.Job):
            return _run_in_thread(_embed_in_twin(self.url, self._options, step))
        return self.call(step.op, step.timeout)


async def _embed_in_twin(url: str, options: dict[str, Any], job: _bulk.Job) -> list[Any]:
    async with AsyncClient(url, **options) as twin:
        return await twin._embed_all(job)


def _run_in_thread(coro: Coroutine[Any, Any, T]) -> T:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sonovec-bulk") as pool:
        return pool.submit(asyncio.run, coro).result()


class AsyncClient(_Api, Awaiting):
    """Asynchronous client with the same methods as ``Client``, as coroutines."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._transport: AsyncHttpTransport | AsyncGrpcTransport = (
            AsyncHttpTransport(self.config) if self.transport == "http" else AsyncGrpcTransport(self.config)
        )
        self.collections = AsyncCollections(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    async def call(self, op: ops.Op[T], timeout: float | None = None, retries: int | None = None) -> T:
        """Run one op, retrying overload and unavailability up to ``retries`` times."""
        attempt = 0
        while True:
            try:
                return await self._transport.call(op, self._deadline(timeout))
            except SonovecClientError as err:
                delay = self._retry_delay(err, attempt, retries)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                attempt += 1

    async def _step(self, step: Call | _bulk.Job) -> Any:
        if isinstance(step, _bulk.Job):
            return await self._embed_all(step)
        return await self.call(step.op, step.timeout)

    async def _embed_all(self, job: _bulk.Job) -> list[Any]:
        stream = self._transport.embed_many if isinstance(self._transport, AsyncGrpcTransport) else None
        return await _bulk.BulkEmbed(self, job, stream).run()


def _index(index: str | IndexSpec) -> IndexSpec:
    return IndexSpec(type=index) if isinstance(index, str) else index


def _deletes(transport: str, collection: str, ids: str | Sequence[str]) -> list[ops.Op[int]]:
    """REST deletes one item per call; gRPC deletes them all in one. Each op counts what existed."""
    ids = [ids] if isinstance(ids, str) else list(ids)
    if transport == "http":
        return [ops.DeleteItem(collection, i) for i in ids]
    return [ops.DeleteItems(collection, ids)]


class _CollectionsApi:
    """What ``Collections`` and ``AsyncCollections`` share: every method, as a plan."""

    def __init__(self, client: _Api) -> None:
        self._client = client

    @api
    def create(
        self,
        name: str,
        *,
        model: str | None = None,
        pooling: str = "mean",
        normalize: bool = True,
        index: str | IndexSpec = "flat",
        description: str = "",
    ) -> Plan[Collection]:
        """A new collection bound to ``model``'s current weights; ``index``: flat, hnsw, ivf."""
        op = ops.CreateCollection(name, model, pooling, normalize, _index(index), description)
        return (yield from _call(op))

    @api
    def info(self, name: str) -> Plan[Collection]:
        """The collection's space, index, size and description."""
        return (yield from _call(ops.GetCollection(name)))

    @api
    def list(self) -> Plan[list[Collection]]:
        """Every collection."""
        return (yield from _call(ops.ListCollections()))

    @api
    def drop(self, name: str) -> Plan[bool]:
        """Drop the collection, its items and its probes."""
        return (yield from _call(ops.DropCollection(name)))

    @api
    def add(
        self,
        collection: str,
        items: Sequence[NewItem],
        *,
        space: SpaceClaim | None = None,
        timeout: float | None = None,
    ) -> Plan[AddResult]:
        """Add or replace items (by id), from vectors or audio; returns once the write is durable."""
        return (yield from _call(ops.AddItems(collection, list(items), space), timeout))

    @api
    def get(self, collection: str, id: str) -> Plan[Item]:
        """One stored item: its labels, metadata and vector."""
        return (yield from _call(ops.GetItem(collection, id)))

    @api
    def delete(self, collection: str, ids: str | Sequence[str]) -> Plan[int]:
        """Delete items by id; returns how many existed."""
        existed = 0
        for op in _deletes(self._client.transport, collection, ids):
            existed += yield from _call(op)
        return existed

    @api
    def search(
        self,
        collection: str,
        audio: AudioLike | None = None,
        *,
        id: str | None = None,
        vector: np.ndarray | None = None,
        space: SpaceClaim | None = None,
        sample_rate: int | None = None,
        k: int = 10,
        labels: Sequence[str] | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        timeout: float | None = None,
    ) -> Plan[SearchResult]:
        """The ``k`` nearest items to a recording, a stored item (``id``, left out) or a ``vector``."""
        query = self._client._query(audio, id, vector, space, sample_rate)
        return (yield from _call(ops.Search(collection, query, k, labels, ef_search, nprobe), timeout))

    @api
    def train_probe(
        self,
        collection: str,
        name: str,
        *,
        classes: Sequence[str] | None = None,
        c: float = 1.0,
        folds: int = 5,
    ) -> Plan[ProbeInfo]:
        """A logistic-regression probe on the collection's labels (the next version of ``name``)."""
        return (yield from _call(ops.TrainProbe(collection, name, classes, c, folds)))

    @api
    def probes(self, collection: str) -> Plan[builtins.list[ProbeInfo]]:
        """The collection's probes, every version."""
        return (yield from _call(ops.ListProbes(collection)))


class Collections(_CollectionsApi, Blocking):
    """``client.collections``: named vector indexes bound to one embedding space (model, weights,
    pooling). The same methods, as coroutines, on ``AsyncClient.collections``."""

    def __init__(self, client: Client) -> None:
        self._client: Client = client

    def _step(self, step: Call | _bulk.Job) -> Any:
        return self._client._step(step)


class AsyncCollections(_CollectionsApi, Awaiting):
    """``client.collections`` of an ``AsyncClient``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client: AsyncClient = client

    async def _step(self, step: Call | _bulk.Job) -> Any:
        return await self._client._step(step)
