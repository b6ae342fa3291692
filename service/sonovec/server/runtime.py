"""The composition root: one ``Runtime`` builds every piece from ``Settings`` and owns the life cycle.

::

    Settings -> Runtime.load():  metrics, backends (load_backends), cache, Service (batcher, engine,
                                 warm-up), store, Collections(embedder = the Service)
             -> Runtime.start(): load in a worker thread, open the collections, then READY
             -> Runtime.drain(): DRAINING (new work refused), queued windows finish, collections
                                 snapshot, cache closed, then STOPPED

REST (``create_app(runtime)``), gRPC (``GrpcServer(runtime)``), ``sonovec extract`` and the test
fixtures all receive a runtime; none of them builds a piece of its own. ``state`` is the one
readiness that both transports and the health probes read; listeners hear every change.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from sonovec.models import Backend, BackendOptions, load_backend
from sonovec.server.collections import Collections, store_for
from sonovec.server.collections.manager import blobs_for
from sonovec.server.core import Service
from sonovec.server.errors import ErrorKind, SonovecError
from sonovec.server.metrics import Metrics
from sonovec.server.redis_cache import default_cache
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)

NOT_READY_RETRY_S = 5.0


class State(enum.Enum):
    LOADING = "loading"  # models loading and warming up
    READY = "ready"
    DRAINING = "draining"  # refusing new work, finishing what is queued
    STOPPED = "stopped"
    FAILED = "failed"  # loading failed: ``Runtime.error`` says why


def load_backends(settings: Settings, models: Sequence[str] | None = None) -> dict[str, Backend]:
    """Load ``models`` (default: every configured one); slow: weights, maybe a download or an export."""
    if settings.weights == "random" and not settings.allow_random_weights:
        raise SonovecError(
            ErrorKind.INVALID,
            "refusing random-init weights: this deployment sets allow_random_weights=false",
            field="weights",
            allowed="a directory with the EnCodec checkpoints, or 'pretrained'",
        )
    backends = {}
    for name in models or settings.models:
        options = BackendOptions(
            model=name,
            weights=settings.weights,
            device=settings.device,
            precision=settings.precision,
            threads=settings.threads,
            workers=settings.workers,
            cache_dir=str(settings.data_dir / "models"),
            extra={"seconds_per_audio_second": str(settings.fake_seconds_per_audio_second)},
        )
        backend = load_backend(settings.backend, options)
        if backend.weights.warning:
            log.warning("%s: %s", name, backend.weights.warning)
        log.info(
            "loaded %s (%s on %s, weights %s)",
            name,
            backend.kind,
            backend.device,
            backend.weights.fingerprint,
        )
        backends[name] = backend
    return backends


class Runtime:
    """Everything a server or a tool needs, built once from ``settings``.

    ``models`` narrows what is loaded (``sonovec extract`` loads only the model it uses); the first
    is the default model. ``collections=False``: no collections (nothing opened under the data dir
    or in Redis), for tools that only embed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        models: Sequence[str] | None = None,
        collections: bool = True,
    ) -> None:
        if models is not None:
            settings = settings.model_copy(update={"models": list(models)})
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.state = State.LOADING
        self.error: str | None = None
        self._service: Service | None = None
        self._collections: Collections | None = None
        self._with_collections = collections
        self._listeners: list[Callable[[State], None]] = []

    # ---- the pieces (available once loaded) ----

    @property
    def service(self) -> Service:
        if self._service is None:
            raise self.unavailable()
        return self._service

    @property
    def collections(self) -> Collections:
        if self._collections is None:
            raise self.unavailable()
        return self._collections

    # ---- the one state ----

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def on_change(self, listener: Callable[[State], None]) -> None:
        """Call ``listener(state)`` on every change of state (on the thread that changes it)."""
        self._listeners.append(listener)

    def _set(self, state: State) -> None:
        self.state = state
        self.metrics.ready.set(1 if state is State.READY else 0)
        for listener in self._listeners:
            listener(state)

    def unavailable(self) -> SonovecError:
        """The error for work arriving while not ready (loading, draining, failed)."""
        reason = {State.LOADING: "models are loading", State.FAILED: f"loading failed: {self.error}"}.get(
            self.state, self.state.value
        )
        return SonovecError(ErrorKind.UNAVAILABLE, f"not ready: {reason}", retry_after=NOT_READY_RETRY_S)

    def require_ready(self) -> Service:
        """The service, if ready; else UNAVAILABLE with Retry-After (what both transports answer)."""
        if self.state is not State.READY or self._service is None:
            raise self.unavailable()
        return self._service

    # ---- life cycle ----

    def load(self) -> None:
        """Blocking: load the models, build the cache, the service (started and warm) and the
        collections. Collections open lazily on first use; ``start`` opens them before READY."""
        settings = self.settings
        backends = load_backends(settings)
        service = Service(
            settings, backends, metrics=self.metrics, cache=default_cache(settings, self.metrics)
        )
        service.start()
        self._service = service
        if self._with_collections:
            self._collections = Collections(
                service,
                store_for(settings),
                max_recordings=settings.max_recordings,
                indexes_dir=settings.data_dir / "indexes",
                blobs=blobs_for(settings),
                codec=service,
                metrics=self.metrics,
            )

    def start_sync(self) -> Runtime:
        """``load``, then READY (collections open on first use): for in-process callers without a
        running event loop (tests, benchmarks)."""
        self._guarded_load()
        self._set(State.READY)
        return self

    async def start(self) -> None:
        """Load in a worker thread, open the collections (snapshots + logs replayed, or Redis
        followed), then READY. On failure: FAILED, with ``error``, and the exception raised."""
        try:
            await asyncio.to_thread(self._guarded_load)
            if self._collections is not None:
                await self._collections.open()
        except Exception as exc:
            self._fail(exc)
            raise
        if self.state is not State.LOADING:  # a drain began while loading: stay down
            await asyncio.to_thread(self.service.stop)
            return
        self._set(State.READY)

    def _guarded_load(self) -> None:
        try:
            self.load()
        except Exception as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: Exception) -> None:
        if self.state is not State.FAILED:
            log.error("loading failed: %s", exc)
            self.error = str(exc)
            self._set(State.FAILED)

    def stop(self, timeout: float | None = None) -> None:
        """Blocking part of a drain: refuse new work, let queued windows finish, stop the workers."""
        if self.state in (State.DRAINING, State.STOPPED):
            return
        if self.state is not State.FAILED:
            self._set(State.DRAINING)
        if self._service is not None:
            self._service.stop(timeout)

    async def drain(self) -> None:
        """DRAINING: new work refused, queued windows finish; then the collections' final snapshot,
        the cache closed, STOPPED. Idempotent."""
        if self.state is State.STOPPED:
            return
        await asyncio.to_thread(self.stop)
        if self._collections is not None:
            await self._collections.close()
        if self._service is not None:
            await self._service.cache.close()
        if self.state is not State.FAILED:
            self._set(State.STOPPED)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        """``start`` on entry, ``drain`` on exit (``sonovec extract``, benchmarks, tests)."""
        try:
            await self.start()
            yield self
        finally:
            await self.drain()
