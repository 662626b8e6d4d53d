"""The watchdog's thread is woken only for a deadline earlier than its own wake-up, and still
cuts every call at its deadline (capi/delivery/watchdog.py)."""

from __future__ import annotations

import socket
import time

from capi.delivery.watchdog import Watchdog


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


def test_a_later_call_with_an_earlier_deadline_is_cut_at_its_own_deadline() -> None:
    watchdog = Watchdog()
    slow_side, slow_peer = socket.socketpair()
    fast_side, fast_peer = socket.socketpair()
    with slow_side, slow_peer, fast_side, fast_peer:
        slow = watchdog.arm(_Connection(slow_side), time.monotonic() + 60)  # the thread sleeps ~60 s
        time.sleep(0.05)
        started = time.monotonic()
        fast = watchdog.arm(_Connection(fast_side), started + 0.2)  # must wake it
        fast_side.settimeout(5)
        assert fast_side.recv(1) == b""  # shut down: the blocked read returns at once
        assert 0.15 <= time.monotonic() - started < 2
        assert watchdog.disarm(fast) is True
        assert watchdog.disarm(slow) is False


def test_calls_armed_while_the_thread_waits_for_an_earlier_deadline_are_cut_too() -> None:
    watchdog = Watchdog()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        now = time.monotonic()
        tokens = [watchdog.arm(_Connection(side), now + 0.1 * (n + 1)) for n, (side, _) in enumerate(pairs)]
        for side, _ in pairs:
            side.settimeout(5)
            assert side.recv(1) == b""
        assert time.monotonic() - now < 2
        assert [watchdog.disarm(token) for token in tokens] == [True, True, True]
    finally:
        for a, b in pairs:
            a.close()
            b.close()
