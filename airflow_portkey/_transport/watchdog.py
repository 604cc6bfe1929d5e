"""A whole-request deadline for the sync path.

requests' read timeout bounds each recv, not a request: a server that sends one header byte
a second, or ``100 Continue`` answers without end, holds a request for ever. A :class:`Guard`
gives one request a deadline; at the deadline one shared watchdog thread shuts down every
socket the request used, which ends a recv blocked in any phase (TLS handshake, headers,
body). The connections of the guarded pools register their sockets with the guard the
current thread holds (:func:`guarding`).

One thread for every guard of the process, with a heap of deadlines: a request costs a heap
push and, when the deadline is the earliest, one wake-up of the thread; not a thread of its
own.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class Guard:
    """One request's deadline and the sockets to shut down when it passes."""

    __slots__ = ("_done", "_lock", "_sockets", "deadline", "fired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False  # the deadline passed and the request's sockets were shut down
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if not self.fired:
                self._sockets.append(sock)
                return
        _shut(sock)  # registered after the deadline: no more waiting on it

    def extend(self, deadline: float) -> None:
        """Move the deadline later (a download that keeps arriving earns more time)."""
        if deadline > self.deadline:
            self.deadline = deadline

    def fire(self) -> None:
        with self._lock:
            if self._done or self.fired:
                return
            self.fired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._sockets = []


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for an SSL socket: SSLSocket.shutdown would drop its
    # SSL object under the thread still reading on it. A shut-down socket ends a blocked recv.
    with suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Guard]] = []
        self._order = itertools.count()
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def add(self, guard: Guard) -> None:
        with self._wake:
            heapq.heappush(self._heap, (guard.deadline, next(self._order), guard))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="portkey-request-deadlines", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is guard:
                self._wake.notify()  # earlier than what the thread sleeps towards

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    now = time.monotonic()
                    if not self._heap:
                        self._wake.wait()
                        continue
                    deadline, _, guard = self._heap[0]
                    if deadline > now:
                        self._wake.wait(deadline - now)
                        continue
                    heapq.heappop(self._heap)
                    if guard.deadline > deadline:  # extended since: wait again
                        heapq.heappush(self._heap, (guard.deadline, next(self._order), guard))
                        continue
                    break
            guard.fire()  # outside the lock: shutting sockets down can take a moment


_watchdog = _Watchdog()
_current = threading.local()


def _after_fork() -> None:
    # A forked child has no watchdog thread, and maybe a lock that thread held: start afresh.
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_after_fork)


@contextmanager
def guarding(deadline: float) -> Iterator[Guard]:
    """Guard the requests this thread sends in the block with ``deadline``."""
    guard = Guard(deadline)
    _watchdog.add(guard)
    _current.guard = guard
    try:
        yield guard
    finally:
        _current.guard = None
        guard.finish()


def watch(sock: socket.socket | None) -> None:
    """Register ``sock`` with the guard of this thread's request, if any."""
    guard: Guard | None = getattr(_current, "guard", None)
    if guard is not None and sock is not None:
        guard.watch(sock)
