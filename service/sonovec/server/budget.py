"""A process-wide budget of bytes held by requests in flight: request bodies while they arrive
and are parsed, and decoded audio while it is decoded and inferred.

Each request takes a ``Reservation`` and grows it as its bytes arrive; growing past the budget
fails that request (OVERLOADED with Retry-After, or TOO_LARGE when it could never fit), and the
whole reservation is returned when the request ends. So N concurrent maximum-size requests hold
at most ``max_bytes`` between them, whatever N is.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from sonovec.server.errors import ErrorKind, SonovecError


class MemoryBudget:
    def __init__(
        self,
        max_bytes: int,
        on_change: Callable[[int], None] | None = None,
        on_refuse: Callable[[], None] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self._held = 0
        self._lock = threading.Lock()  # decoding grows reservations from worker threads
        self._on_change = on_change
        self._on_refuse = on_refuse

    @property
    def held(self) -> int:
        return self._held

    def reservation(self, what: str) -> Reservation:
        return Reservation(self, what)

    @contextlib.contextmanager
    def holding(self, what: str, nbytes: int = 0) -> Iterator[Reservation]:
        """A reservation of ``nbytes`` (OVERLOADED / TOO_LARGE if it does not fit), returned on exit."""
        reservation = self.reservation(what)
        try:
            reservation.grow_to(nbytes)
            yield reservation
        finally:
            reservation.release()

    def _take(self, nbytes: int, total: int, what: str) -> None:
        """Take ``nbytes`` more for a request that then holds ``total``."""
        with self._lock:
            if total > self.max_bytes:
                self._refused()
                raise SonovecError(
                    ErrorKind.TOO_LARGE,
                    f"{what} needs {total} bytes in memory, more than the server's budget",
                    field="body" if what == "body" else "audio",
                    allowed=f"at most {self.max_bytes} bytes of body and decoded audio per request",
                )
            if self._held + nbytes > self.max_bytes:
                self._refused()
                raise SonovecError(
                    ErrorKind.OVERLOADED,
                    f"memory budget full: {self._held} of {self.max_bytes} bytes held by requests in flight",
                    retry_after=1.0,
                )
            self._held += nbytes
            held = self._held
        if self._on_change is not None:
            self._on_change(held)

    def _refused(self) -> None:
        if self._on_refuse is not None:
            self._on_refuse()

    def _give(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes
            held = self._held
        if self._on_change is not None:
            self._on_change(held)


class Reservation:
    """One request's share of the budget; ``grow_to`` is cumulative, ``release`` returns it all."""

    def __init__(self, budget: MemoryBudget, what: str) -> None:
        self._budget = budget
        self._what = what
        self.nbytes = 0

    def grow_to(self, nbytes: int) -> None:
        if nbytes > self.nbytes:
            self._budget._take(nbytes - self.nbytes, nbytes, self._what)
            self.nbytes = nbytes

    def grow_by(self, nbytes: int) -> None:
        self.grow_to(self.nbytes + nbytes)

    def release(self) -> None:
        if self.nbytes:
            self._budget._give(self.nbytes)
            self.nbytes = 0
