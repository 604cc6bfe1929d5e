"""A host that accepts connections and never answers, shared by the unit and UI tiers."""

from __future__ import annotations

import contextlib
import socket
import threading


class SilentServer:
    """Accepts TCP connections on loopback and never answers (a firewall that swallows
    requests, a hung gateway); keeps what it accepted, so a test can count them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            self.on_accept(conn)

    def on_accept(self, conn: socket.socket) -> None:
        """What to do with a connection just accepted: nothing (a subclass may answer)."""

    def close(self) -> None:
        # Closing alone does not wake a thread blocked in accept() on Linux; shutting the
        # listening socket down does (accept fails), so the join below returns at once.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.accepted:
            conn.close()
        self._thread.join(timeout=5)
