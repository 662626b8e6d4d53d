"""The instance is shutting down: a process-wide flag set by SIGTERM.

Cloud Run sends SIGTERM and kills the instance 10 s later. In production functions-framework
runs gunicorn: the arbiter passes SIGTERM on to its worker, whose handler stops accepting
connections and waits (up to gunicorn's `graceful_timeout`, 30 s) for the requests in flight.
Those requests must answer before Cloud Run's kill, so once the flag is set the Graph client
starts no new try and splitting stops: what is not delivered yet is stored for replay and
the caller gets its answer (see docs/delivery.md#delivery-guarantees).

The handler chains to the one it replaces, so gunicorn's own shutdown still runs.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

STOPPING = threading.Event()


def stopping() -> bool:
    return STOPPING.is_set()


def wait(seconds: float) -> None:
    """Sleep, but wake at once when SIGTERM arrives (a backoff must not outlive the instance)."""
    STOPPING.wait(seconds)


def chain_sigterm() -> None:
    """Set STOPPING on SIGTERM, then run the handler that was there. Main thread only."""
    previous = signal.getsignal(signal.SIGTERM)
    if getattr(previous, "_capi", False):
        return  # already chained (main.py imported again)

    def handler(signum: int, frame: FrameType | None) -> None:
        STOPPING.set()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    handler._capi = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, handler)


def install() -> None:
    """Chain SIGTERM now (plain servers) and in every gunicorn worker after gunicorn's own.

    main.py is imported by functions-framework in gunicorn's arbiter, before the workers are
    forked; each worker then resets its signal handlers in `init_signals`. Wrapping that method
    puts our handler in front of the worker's own, in every worker.
    """
    if threading.current_thread() is threading.main_thread():
        chain_sigterm()
    try:
        from gunicorn.workers.base import Worker
    except ImportError:  # not running under gunicorn (tests, the werkzeug dev server)
        return
    original = Worker.init_signals
    if getattr(original, "_capi", False):
        return

    def init_signals(self: Any) -> None:
        original(self)
        chain_sigterm()

    init_signals._capi = True  # type: ignore[attr-defined]
    Worker.init_signals = init_signals  # type: ignore[method-assign]
