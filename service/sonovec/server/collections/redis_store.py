"""Collections in Redis (``--redis-url``), followed by every replica's in-memory FAISS index.

Keys (``P`` is ``--redis-prefix``; ``U`` is a collection's uid, new each time a name is created)::

    P:collections               hash   name -> CollectionInfo JSON (the registry)
    P:collections:uid           hash   name -> uid (what a write checks it still writes to)
    P:collections:events        stream create/drop events, for the followers
    P:col:U:items               hash   item id -> item bytes (JSON header + float32 vector)
    P:col:U:seq                 string the last op's sequence number
    P:col:U:log                 stream one entry per op: seq, op (u/d), id, item bytes
    P:col:U:probes              hash   "name:version" -> probe JSON; "name" -> latest version

A write is one Lua script: for each op it updates the items hash, increments ``seq`` and appends
to the log stream, atomically, so the hash and the stream never disagree. It is acknowledged when
Redis has run it (durability is then Redis': run it with ``appendonly yes``).

Every replica, the one that took the write included, applies ops only from the stream: one
follower task per process (the single writer of its indexes) reads every log with a blocking
XREAD. A write returns once the local follower has applied it, so a client reads its own writes
on the replica it wrote through; other replicas follow within the XREAD round trip (milliseconds).
A follower that finds a gap in ``seq`` (the stream is trimmed to ``STREAM_MAXLEN`` entries, so one
that fell far behind) reloads that collection from the hash. Searches never touch Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, cast

from redis.exceptions import RedisError
from redis.typing import KeyT, StreamIdT

from sonovec.server.collections.spec import CollectionInfo
from sonovec.server.collections.state import CollectionState, Op, decode_item, encode_item
from sonovec.server.errors import ErrorKind, SonovecError, not_found
from sonovec.server.redis_cache import RateLimitedLog, redis_client

log = logging.getLogger(__name__)

STREAM_MAXLEN = 100_000
_BLOCK_MS = 1000
_WRITE_TIMEOUT_S = 5.0
_APPLY_WAIT_S = 5.0

# KEYS: uid map, items, seq, log. ARGV: name, uid, maxlen, then (op, id, item) triples.
# Returns {last seq, changed flags...}; -1 when the collection was dropped or replaced.
_WRITE_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return {-1} end
local out = {0}
for i = 4, #ARGV, 3 do
  local op, id, item = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local changed = 1
  if op == 'u' then
    redis.call('HSET', KEYS[2], id, item)
  else
    changed = redis.call('HDEL', KEYS[2], id)
  end
  if changed == 1 then
    out[1] = redis.call('INCR', KEYS[3])
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'seq', out[1], 'op', op, 'id', id, 'item', item)
  end
  out[#out + 1] = changed
end
return out
"""

# One stream entry as these clients read it: redis-py types replies for every mode (str or bytes,
# RESP2 lists or RESP3 dicts, entries with None fields); ours never decode responses, so an entry
# is a bytes id with bytes fields, and XREAD answers [stream name, entries] pairs.
_Entry = tuple[bytes, dict[bytes, bytes]]


class _Follow:
    """Where the follower is in one collection's log."""

    def __init__(self, state: CollectionState, stream_id: bytes) -> None:
        self.state = state
        self.stream_id = stream_id


class RedisStore:
    kind = "redis"

    def __init__(self, url: str, prefix: str = "sonovec") -> None:
        self._redis = redis_client(url, _WRITE_TIMEOUT_S)
        self._blocking = redis_client(url, _BLOCK_MS / 1000 + _WRITE_TIMEOUT_S)
        self._p = prefix
        self._script = self._redis.register_script(_WRITE_SCRIPT)
        self.states: dict[str, CollectionState] = {}
        self._follows: dict[str, _Follow] = {}
        self._events_id = b"0-0"
        self._loaded = asyncio.Event()  # loaded once: reads answer from memory from then on
        self._tried = asyncio.Event()  # the first load finished, or failed
        self._need_sync = True
        self._applied = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._warn = RateLimitedLog(log)

    # ---- keys ----

    def _key(self, info: CollectionInfo, what: str) -> str:
        return f"{self._p}:col:{info.uid}:{what}"

    @property
    def _registry(self) -> str:
        return f"{self._p}:collections"

    # ---- life cycle ----

    async def open(self) -> None:
        """Start following and wait for the first load; if Redis is down, start anyway: calls
        then answer UNAVAILABLE until the follower gets through (it retries every second)."""
        self._task = asyncio.get_running_loop().create_task(self._follow_loop(), name="collections-follower")
        await self._tried.wait()
        if not self._loaded.is_set():
            log.warning("collections: Redis not reachable yet; following in the background")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for client in (self._redis, self._blocking):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    def check_available(self) -> None:
        if not self._loaded.is_set():
            raise SonovecError(ErrorKind.UNAVAILABLE, "collections: Redis is unreachable or still loading",
                               retry_after=1.0)

    # ---- collections ----

    async def create(self, info: CollectionInfo) -> CollectionState:
        self.check_available()
        async with self._errors("create"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(self._registry, info.name, info.to_json())
                pipe.hsetnx(f"{self._registry}:uid", info.name, info.uid)
                created, _ = await pipe.execute()
            if not created:
                raise SonovecError(ErrorKind.CONFLICT, f"collection {info.name!r} exists", field="name")
            await self._redis.xadd(
                f"{self._registry}:events",
                {"op": "create", "name": info.name, "uid": info.uid},
                maxlen=1000,
                approximate=True,
            )
        await self._until(lambda: self._current(info) is not None)
        return self.states[info.name]

    async def drop(self, state: CollectionState) -> None:
        self.check_available()
        info = state.info
        async with self._errors("drop"), self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._registry, info.name)
            pipe.hdel(f"{self._registry}:uid", info.name)
            pipe.delete(*(self._key(info, k) for k in ("items", "seq", "log", "probes")))
            pipe.xadd(
                f"{self._registry}:events",
                {"op": "drop", "name": info.name, "uid": info.uid},
                maxlen=1000,
                approximate=True,
            )
            await pipe.execute()
        await self._until(lambda: self.states.get(info.name) is not state)

    # ---- items ----

    async def write(self, state: CollectionState, ops: list[Op]) -> list[bool]:
        self.check_available()
        info = state.info
        args: list[Any] = [info.name, info.uid, STREAM_MAXLEN]
        for op in ops:
            args += ["u", op.id, encode_item(op)] if op.kind == "upsert" else ["d", op.id, b""]
        keys = [f"{self._registry}:uid", *(self._key(info, k) for k in ("items", "seq", "log"))]
        async with self._errors("write"):
            out = await self._script(keys=keys, args=args)
        if out[0] == -1:
            raise not_found(f"collection {info.name!r} was dropped", field="collection")
        seq = int(out[0])

        def applied() -> bool:
            current = self._current(info)
            return current is None or current.seq >= seq

        await self._until(applied)
        return [bool(flag) for flag in out[1:]]

    # ---- probes ----

    async def save_probe(self, collection: str, probe: dict[str, Any]) -> int:
        self.check_available()
        key = self._probes_key(collection)
        async with self._errors("save probe"):
            version = int(await self._redis.hincrby(key, probe["name"], 1))
            body = json.dumps({**probe, "version": version})
            await self._redis.hset(key, f"{probe['name']}:{version}", body)
        return version

    async def load_probes(self, collection: str) -> list[dict[str, Any]]:
        self.check_available()
        async with self._errors("load probes"):
            fields = await self._redis.hgetall(self._probes_key(collection))
        return [json.loads(value) for name, value in sorted(fields.items()) if b":" in name]

    def _probes_key(self, collection: str) -> str:
        state = self.states.get(collection)
        if state is None:
            raise not_found(f"collection {collection!r} does not exist", field="collection")
        return self._key(state.info, "probes")

    # ---- helpers ----

    def _current(self, info: CollectionInfo) -> CollectionState | None:
        """This replica's state of that incarnation of the collection, if it has it."""
        state = self.states.get(info.name)
        return state if state is not None and state.info.uid == info.uid else None

    def _errors(self, what: str) -> _RedisErrors:
        return _RedisErrors(what, self._warn)

    async def _until(self, done: Any) -> None:
        """Wait until the follower made ``done()`` true (read-your-writes on this replica)."""
        async with self._applied:
            try:
                await asyncio.wait_for(self._applied.wait_for(done), _APPLY_WAIT_S)
            except TimeoutError:
                raise SonovecError(
                    ErrorKind.UNAVAILABLE, "written to Redis, but this replica has not caught up yet",
                    retry_after=1.0,
                ) from None

    async def _last_entry(self, stream: str) -> _Entry | None:
        """The newest entry of a stream, if it has one."""
        last = cast(list[_Entry] | None, await self._redis.xrevrange(stream, count=1))
        return last[0] if last else None

    async def _notify(self) -> None:
        async with self._applied:
            self._applied.notify_all()

    # ---- the follower: the one writer of this replica's indexes ----

    async def _follow_loop(self) -> None:
        while True:
            try:
                if self._need_sync:
                    await self._sync_all()
                await self._follow_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                self._tried.set()
                self._need_sync = True
                self._warn.warning("collections: lost Redis (%s: %s); resyncing in 1 s",
                                   type(exc).__name__, exc)
                await asyncio.sleep(1.0)
            except Exception:
                self._tried.set()
                self._need_sync = True
                log.exception("collections follower")
                await asyncio.sleep(1.0)

    async def _sync_all(self) -> None:
        started = time.perf_counter()
        last = await self._last_entry(f"{self._registry}:events")
        self._events_id = last[0] if last else b"0-0"
        registry = await self._redis.hgetall(self._registry)
        infos = [CollectionInfo.from_json(text) for text in registry.values()]
        follows = [await self._load(info) for info in infos]
        self.states = {f.state.name: f.state for f in follows}
        self._follows = {f.state.name: f for f in follows}
        self._need_sync = False
        self._loaded.set()
        self._tried.set()
        await self._notify()
        log.info("collections: %d loaded from Redis in %.2f s", len(infos), time.perf_counter() - started)

    async def _load(self, info: CollectionInfo) -> _Follow:
        """Build one collection from the items hash, to follow its log from before the scan."""
        last = await self._last_entry(self._key(info, "log"))
        stream_id, seq = (last[0], int(last[1][b"seq"])) if last else (b"0-0", 0)
        state = CollectionState(info)
        ops: list[Op] = []
        async for _, blob in self._redis.hscan_iter(self._key(info, "items"), count=1000):
            ops.append(decode_item(blob))
            if len(ops) >= 10_000:
                await asyncio.to_thread(state.apply, ops)
                ops = []
        await asyncio.to_thread(state.apply, ops)
        state.seq = seq
        return _Follow(state, stream_id)

    def _install(self, follow: _Follow) -> None:
        old = self.states.get(follow.state.name)
        if old is not None and old.info.uid != follow.state.info.uid:
            old.dropped = True
        self.states[follow.state.name] = follow.state
        self._follows[follow.state.name] = follow

    async def _follow_once(self) -> None:
        streams: dict[KeyT, StreamIdT] = {f"{self._registry}:events": self._events_id}
        for follow in self._follows.values():
            streams[self._key(follow.state.info, "log")] = follow.stream_id
        reply = cast(
            list[tuple[bytes, list[_Entry]]], await self._blocking.xread(streams, count=1000, block=_BLOCK_MS)
        )
        by_stream = {key.decode(): entries for key, entries in reply}
        events = by_stream.pop(f"{self._registry}:events", [])
        for entry_id, fields in events:
            await self._on_event(fields)
            self._events_id = entry_id
        for follow in list(self._follows.values()):
            entries = by_stream.get(self._key(follow.state.info, "log"))
            if entries and self._follows.get(follow.state.name) is follow:
                await self._apply_entries(follow, entries)
        await self._notify()

    async def _on_event(self, fields: dict[bytes, bytes]) -> None:
        name, uid = fields[b"name"].decode(), fields[b"uid"].decode()
        current = self.states.get(name)
        if fields[b"op"] == b"drop":
            if current is not None and current.info.uid == uid:
                current.dropped = True
                del self.states[name], self._follows[name]
            return
        if current is None or current.info.uid != uid:
            text = await self._redis.hget(self._registry, name)
            if text is not None and CollectionInfo.from_json(text).uid == uid:
                self._install(await self._load(CollectionInfo.from_json(text)))

    async def _apply_entries(self, follow: _Follow, entries: list[_Entry]) -> None:
        state = follow.state
        ops: list[Op] = []
        for entry_id, fields in entries:
            seq = int(fields[b"seq"])
            if seq <= state.seq:
                follow.stream_id = entry_id
                continue
            if seq != state.seq + 1 + len(ops):
                log.warning("collection %s: gap in the log (at %d, got %d); reloading",
                            state.name, state.seq, seq)
                self._install(await self._load(state.info))  # a new state: searches on the old one finish
                return
            if fields[b"op"] == b"u":
                ops.append(decode_item(fields[b"item"], seq))
            else:
                ops.append(Op("delete", fields[b"id"].decode(), seq=seq))
            follow.stream_id = entry_id
        if ops:
            await state.lock.run_write(lambda: state.apply(ops))


class _RedisErrors:
    """Turn a Redis failure into UNAVAILABLE (logged, rate-limited)."""

    def __init__(self, what: str, warn: RateLimitedLog) -> None:
        self._what = what
        self._warn = warn

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if exc is None or not isinstance(exc, RedisError | OSError | TimeoutError):
            return False
        self._warn.warning("collections: %s failed in Redis (%s: %s)", self._what, type(exc).__name__, exc)
        raise SonovecError(ErrorKind.UNAVAILABLE, f"collections: Redis failed ({type(exc).__name__})",
                           retry_after=1.0) from exc
