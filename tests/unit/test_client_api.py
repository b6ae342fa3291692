"""The client's sync and async twins offer the same API: the same public methods with the same
signatures and docstrings, plain on ``Client``/``Collections``, coroutines on ``AsyncClient``/
``AsyncCollections``, and a type checker sees each method's parameters and result on all four."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from pathlib import Path
from typing import Any

import pytest

from sonovec.client import AsyncClient, AsyncCollections, Client, Collections
from sonovec.client._plan import Awaiting, Blocking, Plan, api

TWINS = [(Client, AsyncClient), (Collections, AsyncCollections)]
CLIENT = Path(__file__).resolve().parents[2] / "client"


def public(cls: type) -> dict[str, Any]:
    """Every public attribute of ``cls`` (methods and properties, inherited too), as looked up."""
    return {name: inspect.getattr_static(cls, name) for name in dir(cls) if not name.startswith("_")}


def shape(signature: inspect.Signature) -> str:
    """A signature with the twins' own class names made one, so that ``-> Client`` and
    ``-> AsyncClient`` (or ``client: Client``) read the same."""
    text = str(signature)
    for sync, twin in TWINS:
        text = text.replace(twin.__name__, sync.__name__)
    return text


@pytest.mark.parametrize(("sync", "twin"), TWINS, ids=lambda c: c.__name__)
def test_twins_have_the_same_public_methods(sync: type, twin: type) -> None:
    assert sorted(public(sync)) == sorted(public(twin))
    assert len(public(sync)) >= 5


@pytest.mark.parametrize(("sync", "twin"), TWINS, ids=lambda c: c.__name__)
def test_twins_share_signatures_and_docstrings(sync: type, twin: type) -> None:
    for name in [*public(twin), "__init__"]:
        mine, theirs = getattr(sync, name), getattr(twin, name)
        if isinstance(inspect.getattr_static(twin, name), property):
            assert isinstance(inspect.getattr_static(sync, name), property), name
            mine, theirs = mine.fget, theirs.fget
        assert shape(inspect.signature(mine)) == shape(inspect.signature(theirs)), name
        assert inspect.getdoc(mine) == inspect.getdoc(theirs), name


@pytest.mark.parametrize(("sync", "twin"), TWINS, ids=lambda c: c.__name__)
def test_sync_methods_block_and_async_ones_are_coroutines(sync: type, twin: type) -> None:
    for name, attr in public(twin).items():
        if inspect.isfunction(attr):
            assert inspect.iscoroutinefunction(attr), f"{twin.__name__}.{name}"
            assert not inspect.iscoroutinefunction(getattr(sync, name)), f"{sync.__name__}.{name}"
            assert getattr(sync, name).__qualname__ == f"{sync.__name__}.{name}"
    if hasattr(twin, "__aenter__"):
        assert all(inspect.iscoroutinefunction(getattr(twin, n)) for n in ("__aenter__", "__aexit__"))
        assert not any(inspect.iscoroutinefunction(getattr(sync, n)) for n in ("__enter__", "__exit__"))


def test_api_methods_show_their_result_type() -> None:
    """help() and inspect name what the call gives (the plan's result), not the plan itself."""
    for cls in (Client, AsyncClient):
        assert inspect.signature(cls.embed).return_annotation == "Embedding"
        assert "One recording's pooled embedding" in (cls.embed.__doc__ or "")
    assert inspect.signature(AsyncCollections.probes).return_annotation == "builtins.list[ProbeInfo]"


def test_instances_carry_the_same_public_attributes() -> None:
    """What ``__init__`` sets (config, limits, collections, ...) is the same on both clients."""

    async def attributes() -> dict[str, str]:
        async with AsyncClient("grpc://127.0.0.1:9", api_key="k") as c:
            return {k: type(v).__name__ for k, v in vars(c).items() if not k.startswith("_")}

    with Client("grpc://127.0.0.1:9", api_key="k") as c:
        mine = {k: type(v).__name__ for k, v in vars(c).items() if not k.startswith("_")}
    theirs = asyncio.run(attributes())
    assert mine == {**theirs, "collections": "Collections"}
    assert theirs["collections"] == "AsyncCollections" and "limits" in mine and "config" in mine


class _Echo:
    """Plans to run without a server: a step is a number, and its outcome that number doubled."""

    def __init__(self) -> None:
        self.closed: list[str] = []

    @api
    def twice(self, n: int, *, then: int = 0) -> Plan[int]:
        """Doubles n, then then."""
        first = yield n
        second = yield then
        return first + second

    @api
    def fails(self) -> Plan[int]:
        try:
            yield -1
        finally:
            self.closed.append("fails")
        return 0


class _BlockingEcho(_Echo, Blocking):
    def _step(self, step: int) -> int:
        if step < 0:
            raise ValueError("refused")
        return 2 * step


class _AwaitingEcho(_Echo, Awaiting):
    async def _step(self, step: int) -> int:
        if step < 0:
            raise ValueError("refused")
        return 2 * step


def test_a_plan_runs_the_same_blocking_and_awaiting() -> None:
    assert _BlockingEcho().twice(3, then=4) == 14
    assert asyncio.run(_AwaitingEcho().twice(3, then=4)) == 14
    assert str(inspect.signature(_AwaitingEcho.twice)) == "(self, n: 'int', *, then: 'int' = 0) -> 'int'"
    with pytest.raises(TypeError):
        _BlockingEcho().twice(3, 4)  # type: ignore[misc]


def test_a_failed_step_raises_and_ends_its_plan() -> None:
    blocking, awaiting = _BlockingEcho(), _AwaitingEcho()
    with pytest.raises(ValueError, match="refused"):
        blocking.fails()
    with pytest.raises(ValueError, match="refused"):
        asyncio.run(awaiting.fails())
    assert blocking.closed == ["fails"] and awaiting.closed == ["fails"]


def test_a_subclass_keeps_its_own_methods() -> None:
    class Mine(Client):
        def embed(self, *args: Any, **kwargs: Any) -> Any:
            return "mine"

    with Mine("http://127.0.0.1:9") as c:
        assert c.embed("x") == "mine"
        assert inspect.signature(Mine.encode) == inspect.signature(Client.encode)


TYPED = """
from typing import Any, assert_type
from sonovec.client import (
    AsyncClient, Client, Codes, Collection, Embedding, ModelsInfo, ProbeInfo, SearchResult,
)

def blocking(c: Client) -> None:
    assert_type(c.embed("a.wav", model="m", frames=True), Embedding)
    assert_type(c.encode(b"RIFF", bandwidth=6.0), Codes)
    assert_type(c.models(), ModelsInfo)
    assert_type(c.embed_many(["a.wav"], concurrency=2), list[Any])
    assert_type(c.collections.list(), list[Collection])
    assert_type(c.collections.probes("c"), list[ProbeInfo])
    assert_type(c.collections.delete("c", ["a"]), int)
    c.embed("a.wav", bogus=1)  # ERROR 1: no such parameter
    c.classify("a.wav")  # ERROR 2: collection is required

async def awaiting(c: AsyncClient) -> None:
    assert_type(await c.embed("a.wav"), Embedding)
    assert_type(await c.collections.search("c", id="x", k=3), SearchResult)
    assert_type(await c.collections.list(), list[Collection])
    await c.encode(1.5)  # ERROR 3: not audio
"""


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is a development dependency")
def test_type_checkers_see_each_methods_parameters_and_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an IDE shows: each method's parameters and result, on the sync and the async client."""
    from mypy import api as mypy

    source = tmp_path / "typed.py"
    source.write_text(TYPED)
    monkeypatch.setenv("MYPYPATH", str(CLIENT))
    out, err, _ = mypy.run([str(source), "--config-file=", "--cache-dir", str(tmp_path / "cache")])
    lines = TYPED.splitlines()
    failed = {int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line}
    assert sorted(lines[n - 1].split("# ERROR ")[-1][:1] for n in failed) == ["1", "2", "3"], out + err
