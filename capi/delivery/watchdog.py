"""A bound on the TOTAL time of one HTTP call, which socket timeouts cannot give.

urllib3's (and the socket's) read timeout bounds each read, not the call: an answer dripped
one byte per second never trips a 5 s read timeout, and holds the request (and the SIGTERM
promise, and the idempotency lease) without bound. Here one daemon thread watches every call
in flight and, at its deadline, shuts its socket down: the blocked read returns at once and
the caller sees the call fail. `guarded_pool` builds a urllib3 pool manager whose connections
arm the watchdog when a request starts; the caller disarms it once the answer is read.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class Watchdog:
    """Shuts down the sockets of calls past their deadline (one thread, started on first use)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, HTTPConnection]] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._wakes_at = float("inf")  # when the thread's current wait ends (inf: until notified)

    def arm(self, connection: HTTPConnection, deadline: float) -> int:
        with self._cond:
            token = next(self._ids)
            self._armed[token] = (deadline, connection)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="capi-http-watchdog", daemon=True)
                self._thread.start()
            # Woken only when this deadline comes before the thread's own wake-up: deadlines are
            # now + the call's timeout, so almost never under steady traffic. Waking it for every
            # call cost a thread switch per Graph call (py-spy/cProfile of a single-event request).
            if deadline < self._wakes_at:
                self._cond.notify()
            return token

    def disarm(self, token: int) -> bool:
        """Forget the call; True when its deadline had passed and its socket was shut down."""
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._armed:
                    self._wakes_at = float("inf")
                    self._cond.wait()
                    continue
                now = self._clock()
                due = [token for token, (deadline, _) in self._armed.items() if deadline <= now]
                for token in due:
                    _, connection = self._armed.pop(token)
                    self._fired.add(token)
                    _cut(connection)
                if not due:
                    self._wakes_at = min(deadline for deadline, _ in self._armed.values())
                    self._cond.wait(self._wakes_at - now)


def _cut(connection: HTTPConnection) -> None:
    """Shut the connection's socket down: a read blocked on it returns (EOF) at once.
    socket.socket's own shutdown, not SSLSocket's, which would unwrap TLS under the reader."""
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):  # closed already
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


WATCHDOG = Watchdog()
_call = threading.local()  # the current thread's bounded call: (deadline, Call, Watchdog)


class Call:
    """One bounded call: `cut` says, once the block is left, whether the watchdog cut it."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.cut = False


@contextlib.contextmanager
def bounded_call(at: float, watchdog: Watchdog = WATCHDOG) -> Iterator[Call]:
    """Bound every request the current thread starts inside this block to end by `at`
    (monotonic): past it, the watchdog shuts the request's socket down."""
    call = Call()
    _call.current = (at, call, watchdog)
    try:
        yield call
    finally:
        _call.current = None
        for token in call.tokens:
            call.cut |= watchdog.disarm(token)


class _Armed:
    """Arms the watchdog with the thread's deadline when a request starts on this connection."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        current = getattr(_call, "current", None)
        if current is not None:
            at, call, watchdog = current
            call.tokens.append(watchdog.arm(self, at))  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Armed, HTTPConnection):
    pass


class _HTTPSConnection(_Armed, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def guarded_pool(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """`manager`, its pools built with connections that arm the watchdog."""
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager
