"""Each client method written once, run two ways.

A method is written once as a *plan*: a generator that yields the steps it needs done (whatever
the class's ``_step`` runs: for the client an op, or an ``embed_many`` job) and returns its result,
having been sent each step's outcome. ``@api`` marks a plan; a class that inherits it and ``Blocking`` gets it
as a plain method that runs each step and blocks (``Client``, ``Collections``), a class that
inherits it and ``Awaiting`` gets it as a coroutine method (``AsyncClient``, ``AsyncCollections``).
Both have the plan's parameters, docstring and result type, for help(), inspect and type checkers::

    class _Api:
        @api
        def info(self) -> Plan[ServerInfo]:
            return (yield Call(ops.Info()))  # the outcome of the step: the ServerInfo

    class Client(_Api, Blocking): ...        # Client().info() -> ServerInfo
    class AsyncClient(_Api, Awaiting): ...   # await AsyncClient().info() -> ServerInfo
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Concatenate, Generic, ParamSpec, TypeAlias, TypeVar, cast, overload

P = ParamSpec("P")
T = TypeVar("T")

# A method's body: yields steps, is sent their outcomes, returns the method's result.
Plan: TypeAlias = Generator[Any, Any, T]

_PLAN_RESULT = re.compile(r"Plan\[(.*)\]")


class api(Generic[P, T]):  # lower case: used as a decorator
    """Marks a plan as a method of the ``Blocking`` and ``Awaiting`` classes that inherit it."""

    def __init__(self, plan: Callable[Concatenate[Any, P], Plan[T]]) -> None:
        self.plan = plan

    @overload
    def __get__(self, obj: None, owner: type[Blocking]) -> Callable[Concatenate[Any, P], T]: ...

    @overload
    def __get__(
        self, obj: None, owner: type[Awaiting]
    ) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]: ...

    @overload
    def __get__(self, obj: None, owner: type) -> api[P, T]: ...

    @overload
    def __get__(self, obj: Blocking, owner: type | None = None) -> Callable[P, T]: ...

    @overload
    def __get__(self, obj: Awaiting, owner: type | None = None) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        # Only type checkers come here for instances: Blocking and Awaiting subclasses replace
        # every plan with a real method when they are defined (below).
        if obj is None:
            return self
        raise TypeError(f"{self.plan.__name__} is a plan: run it from a Blocking or Awaiting class")

    def method(self, owner: type, name: str, run: Callable[..., Any]) -> Callable[..., Any]:
        """``run`` (which calls the plan) dressed as ``owner.name``: the plan's docstring and
        signature, with the plan's result for its return annotation (``Plan[X]`` -> ``X``)."""
        functools.update_wrapper(run, self.plan)
        signature = inspect.signature(self.plan)
        result = signature.return_annotation
        if isinstance(result, str) and (match := _PLAN_RESULT.fullmatch(result)):
            result = match.group(1)
        run.__qualname__ = f"{owner.__qualname__}.{name}"
        run.__annotations__ = {**self.plan.__annotations__, "return": result}
        run.__signature__ = signature.replace(return_annotation=result)  # type: ignore[attr-defined]
        return run


def _install(cls: type, wrap: Callable[[Callable[..., Plan[Any]]], Callable[..., Any]]) -> None:
    for name in dir(cls):
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, api):
            setattr(cls, name, attr.method(cls, name, wrap(attr.plan)))


def _blocking(plan: Callable[..., Plan[Any]]) -> Callable[..., Any]:
    def run(self: Blocking, *args: Any, **kwargs: Any) -> Any:
        return self._drive(plan(self, *args, **kwargs))

    return run


def _awaiting(plan: Callable[..., Plan[Any]]) -> Callable[..., Any]:
    async def run(self: Awaiting, *args: Any, **kwargs: Any) -> Any:
        return await self._drive(plan(self, *args, **kwargs))

    return run


class Blocking:
    """Runs plans step by step, blocking on each (``_step``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _install(cls, _blocking)

    def _step(self, step: Any) -> Any:
        raise NotImplementedError

    def _drive(self, plan: Plan[T]) -> T:
        outcome = None
        try:
            while True:
                try:
                    step = plan.send(outcome)
                except StopIteration as done:
                    return cast(T, done.value)
                outcome = self._step(step)
        finally:
            plan.close()  # a step that failed leaves the plan suspended: end it now


class Awaiting:
    """Runs plans step by step, awaiting each (``_step``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _install(cls, _awaiting)

    async def _step(self, step: Any) -> Any:
        raise NotImplementedError

    async def _drive(self, plan: Plan[T]) -> T:
        outcome = None
        try:
            while True:
                try:
                    step = plan.send(outcome)
                except StopIteration as done:
                    return cast(T, done.value)
                outcome = await self._step(step)
        finally:
            plan.close()  # a step that failed leaves the plan suspended: end it now
