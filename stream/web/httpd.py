"""HTTP server: the web app on waitress, with timeouts, early refusals and a clean stop.

Starts threads: waitress's worker threads (``waitress-*``, one per request in progress)
and, on :meth:`HttpServer.serve_forever`'s way out, one that stops the app
(``depthstream-stop``) while the loop still sends the last answers. The accept loop
runs on the caller's thread. Touches files: request bodies over 512 KB wait in unnamed
temporary files in the data folder's ``uploads/`` until the app has read them (not in
the system's temporary folder, often a small RAM disk), under the same limits.

What Werkzeug's development server lacked, and how it is done here:

* **Write timeout.** A client that accepts no bytes for ``write_timeout_s`` is
  disconnected: its thread is freed and a live viewer's body is closed (so the camera
  stops when nobody reads). Idle and stalled connections close after the same time.
* **Slow clients cannot hold the server** (slowloris). A connection must send a whole
  request head within ``header_timeout_s`` of connecting (or of its last answer), or it
  is closed; sending a byte now and then does not extend that. At most
  ``max_connections`` are open: a new connection then replaces the oldest one still
  waiting for its head, of the client address that holds the most of those, so a
  client sending a real request always gets in.
* **Refusals before the body.** A request with a body is checked on its headers alone:
  a foreign Host or Origin (403), no token (401), over the size limit (413), or more
  large uploads in flight than ``max_uploads`` (503 with ``Retry-After``) is answered
  before a byte of the body is read or buffered. The answers are JSON, as the app's.
* **A clean stop.** :meth:`HttpServer.request_stop` (signal-safe) ends the loop: the
  listening socket closes first, then the app stops (running jobs fail, live streams
  end) while answers in flight are sent, then the threads are given what is left of
  ``stop_timeout_s``.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from waitress import wasyncore
from waitress.buffers import OverflowableBuffer, TempfileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, create_server
from waitress.utilities import Error
from waitress.utilities import RequestEntityTooLarge as _WaitressTooLarge

from stream.core.errors import SinkError

from .app import FORM_SLACK_BYTES, DepthServer
from .auth import request_has_token
from .uploads import too_large_message

__all__ = ["HttpServer"]

log = logging.getLogger(__name__)

#: Bodies up to this size are not counted as uploads in flight (they cost little).
SMALL_BODY_BYTES = 1 << 20
#: A refused body up to this size is read and dropped before the answer, so a client
#: that sends before it reads (a browser, ``http.client``) sees the answer, not a reset.
DISCARD_MAX_BYTES = 64 << 20
_OUTBUF_HIGH_BYTES = 1 << 20  # a client's unsent bytes before its thread waits for it
_RETRY_AFTER_S = 5
_SWEEP_S = 0.25  # how often connections are checked against the head deadline


class _JsonError(Error):
    """An answer waitress sends itself (before the app), as JSON like the app's errors."""

    def __init__(self, code: int, reason: str, message: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.code, self.reason, self.headers = code, reason, headers

    def to_response(self, ident: str | None = None) -> tuple[str, list, bytes]:
        body = json.dumps({"error": self.body, "status": self.code}).encode()
        headers = [("Content-Type", "application/json"), *self.headers]
        return f"{self.code} {self.reason}", headers, body


class _Slots:
    """Counts large uploads in flight; :meth:`take` gives a release callable or ``None``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self._lock = threading.Lock()

    def take(self) -> Callable[[], None] | None:
        with self._lock:
            if self.taken >= self.limit:
                return None
            self.taken += 1
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                with self._lock:
                    self.taken -= 1

        return release


class _Discard:
    """A body receiver that drops what it gets (of a request already refused)."""

    error = None

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.completed = length == 0

    def received(self, data: bytes) -> int:
        n = min(len(data), self.remaining)
        self.remaining -= n
        self.completed = self.remaining == 0
        return n

    def getbuf(self) -> io.BytesIO:
        return io.BytesIO()

    def getfile(self) -> io.BytesIO:
        return io.BytesIO()

    def __len__(self) -> int:
        return 0


class _SpoolFile(TempfileBasedBuffer):
    """Waitress's file buffer of a request body, made in our folder (unnamed, unlinked)."""

    def __init__(self, folder: Path, from_buffer: Any = None) -> None:
        self.folder = folder
        super().__init__(from_buffer)

    def newfile(self) -> Any:
        return tempfile.TemporaryFile("w+b", dir=self.folder)


class _SpoolBuffer(OverflowableBuffer):
    """Waitress's body buffer: in memory up to ``overflow`` bytes, then in ``folder``."""

    def __init__(self, overflow: int, folder: Path) -> None:
        super().__init__(overflow)
        self.folder = folder

    def _set_large_buffer(self) -> None:
        old = self.buf
        self.buf = _SpoolFile(self.folder, old)
        if hasattr(old, "close"):
            old.close()
        self.overflowed = True


class _Gate:
    """What a request's headers decide before its body is read."""

    def __init__(self, server: DepthServer) -> None:
        self.config = server.config
        self.names = server.names
        self.spool_dir = server.store.uploads_dir
        self.max_body = server.config.max_upload_bytes + FORM_SLACK_BYTES
        self.slots = _Slots(server.config.max_uploads)

    def refuse(self, parser: _Parser) -> Error | None:
        """The error to answer at once, or ``None`` (then a large body holds a slot)."""
        headers = parser.headers
        refusal = self.names.refusal(getattr(parser, "command", ""), headers.get("HOST"),
                                     headers.get("ORIGIN"))
        if refusal is not None:
            return _JsonError(403, "Forbidden", refusal)
        token = self.config.token
        if token is not None and not request_has_token(
                token, headers.get("AUTHORIZATION"), headers.get("COOKIE"), headers.get("HOST")):
            return _JsonError(401, "Unauthorized", "this server needs its token",
                              (("WWW-Authenticate", 'Bearer realm="depthstream"'),))
        if parser.content_length > self.max_body:
            return _JsonError(413, "Content Too Large", too_large_message(self.config))
        if parser.chunked or parser.content_length > SMALL_BODY_BYTES:
            release = self.slots.take()
            if release is None:
                return _JsonError(503, "Service Unavailable",
                                  f"{self.slots.limit} uploads are on their way in already; "
                                  f"try again in a few seconds",
                                  (("Retry-After", str(_RETRY_AFTER_S)),))
            parser.hold(release)
        return None


class _Parser(HTTPRequestParser):
    """Waitress's request parser, with the :class:`_Gate` asked once the headers are in."""

    gate: _Gate  # set on the per-server subclass
    _release: Callable[[], None] | None = None

    def received(self, data: bytes) -> int:
        had_headers = self.headers_finished
        consumed = super().received(data)
        if isinstance(self.error, _WaitressTooLarge):  # far over the limit, or chunked
            self.error = _JsonError(413, "Content Too Large", too_large_message(self.gate.config))
            self.expect_continue = False  # else waitress sends 100 and reads the body
        elif (not had_headers and self.headers_finished and self.error is None
              and not self.completed):  # a body follows
            refusal = self.gate.refuse(self)
            if refusal is not None:
                self._refuse(refusal)
            elif self.body_rcv is not None:  # no byte of it is in yet: spool it at home
                self.body_rcv.buf = _SpoolBuffer(self.adj.inbuf_overflow, self.gate.spool_dir)
        return consumed

    def _refuse(self, error: Error) -> None:
        self.error = error
        if self.expect_continue or self.chunked or self.content_length > DISCARD_MAX_BYTES:
            # Answer now: the client waits for it (100-continue), or the body is too big
            # to read for nothing. (Else waitress would send 100 and read it anyway.)
            self.completed = True
            self.expect_continue = False
        else:
            self.body_rcv = _Discard(self.content_length)

    def hold(self, release: Callable[[], None]) -> None:
        """Keep an upload slot until the request is closed (or forgotten)."""
        self._release = release
        weakref.finalize(self, release)

    def close(self) -> None:
        if self._release is not None:
            self._release()
        super().close()


class _Guard:
    """Bounds slow clients: a deadline for each request head, and room for new connections.

    Runs on the accept loop's thread only (:meth:`admit` from the accept, :meth:`sweep`
    between two rounds of the loop), as waitress's own idle timeout does.

    Args:
        header_timeout_s: how long a connection may take to send a request head.
        max_connections: connections open at once.
        connections: the server's socket map (connections and listeners).
    """

    def __init__(self, header_timeout_s: float, max_connections: int,
                 connections: dict[int, Any]) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self._map = connections
        self._last_sweep = 0.0
        self._last_warning = -60.0
        self.evicted = 0
        self.expired = 0

    def _channels(self) -> list[_Channel]:
        return [c for c in list(self._map.values()) if isinstance(c, _Channel)]

    def admit(self, channel: _Channel) -> None:
        """Make room for a new connection when ``max_connections`` are open.

        The oldest connection still waiting for its request head goes, of the client
        address that holds the most of those; when every other one is busy with a
        request, the new one goes.
        """
        channels = self._channels()
        if len(channels) <= self.max_connections:
            return
        now = time.monotonic()
        if now - self._last_warning > 60.0:
            self._last_warning = now
            log.warning("%d connections are open: closing those that have sent no request "
                        "(slow or hostile clients?)", len(channels) - 1)
        waiting = [c for c in channels if c is not channel and c.awaiting_head()]
        if not waiting:
            channel.handle_close()
            return
        per_address = collections.Counter(c.client_address for c in waiting)
        busiest = max(per_address, key=per_address.__getitem__)
        victim = min((c for c in waiting if c.client_address == busiest),
                     key=lambda c: c.head_since or now)
        victim.handle_close()
        self.evicted += 1

    def sweep(self) -> None:
        """Close the connections whose request head is late (at most every 0.25 s)."""
        now = time.monotonic()
        if now - self._last_sweep < _SWEEP_S:
            return
        self._last_sweep = now
        for channel in self._channels():
            if not channel.awaiting_head():
                channel.head_since = None
            elif channel.head_since is None:  # its last answer has just gone out
                channel.head_since = now
            elif now - channel.head_since > self.header_timeout_s:
                channel.handle_close()
                self.expired += 1


class _Channel(HTTPChannel):
    """Waitress's connection, with a write timeout and a deadline for each request head."""

    write_timeout_s = 10.0
    guard: _Guard | None = None  # set on the per-server subclass

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
        super().__init__(server, sock, addr, adj, map)
        #: When it began waiting for a request head (``None``: it is busy with one).
        self.head_since: float | None = time.monotonic()
        if self.guard is not None:
            self.guard.admit(self)

    @property
    def client_address(self) -> str:
        """The client's address (without the port)."""
        return str(self.addr[0] if isinstance(self.addr, tuple) else self.addr)

    def awaiting_head(self) -> bool:
        """Whether it waits for a request head (none in service, nothing left to send)."""
        request = self.request
        return (self.connected and not self.requests and not self.total_outbufs_len
                and not self.will_close and not self.close_when_flushed
                and (request is None or not request.headers_finished))

    def _flush_outbufs_below_high_watermark(self) -> None:
        if self.total_outbufs_len <= self.adj.outbuf_high_watermark:
            return
        with self.outbuf_lock:
            _, failed = self._flush_exception(self._flush_some, do_close=False)
            if failed:  # the main loop will close it; do not wait forever for that
                self.server.pull_trigger()
                self.outbuf_lock.wait(self.write_timeout_s)
                return
            last = self.total_outbufs_len
            deadline = time.monotonic() + self.write_timeout_s
            while self.connected and self.total_outbufs_len > self.adj.outbuf_high_watermark:
                self.server.pull_trigger()
                self.outbuf_lock.wait(0.25)
                now = time.monotonic()
                if self.total_outbufs_len < last:
                    last, deadline = self.total_outbufs_len, now + self.write_timeout_s
                elif now >= deadline:
                    log.info("client %s read nothing for %g s: disconnected", self.addr,
                             self.write_timeout_s)
                    self.connected = False  # the writer raises ClientDisconnected
                    self.will_close = True  # the main loop closes the socket
                    self.server.pull_trigger()
                    return


class HttpServer:
    """The app on waitress, bound at construction; :meth:`serve_forever` runs it.

    Args:
        server: the app's state (its ``app`` is served; it is closed on the way out).
        host: address to bind.
        port: TCP port; 0 picks a free one (:attr:`port` says which).
        threads: request threads; default: enough for every viewer and upload plus 8.
        stop_timeout_s: the longest :meth:`serve_forever` takes to return after a stop
            was requested.
        close_app: stop the app too on the way out (its jobs and live stream).

    Raises:
        SinkError: the address cannot be listened on (port in use, no such address).
    """

    def __init__(self, server: DepthServer, host: str = "127.0.0.1", port: int = 0,
                 threads: int | None = None, stop_timeout_s: float = 9.0,
                 close_app: bool = True) -> None:
        config = server.config
        self.server = server
        self.close_app = close_app
        self.stop_timeout_s = stop_timeout_s
        self._stop = threading.Event()
        self._map: dict[int, Any] = {}
        gate = _Gate(server)
        parser = type("Parser", (_Parser,), {"gate": gate})
        self.guard = _Guard(config.header_timeout_s, config.max_connections, self._map)
        self.channel_class = type("Channel", (_Channel,), {
            "parser_class": parser, "write_timeout_s": config.write_timeout_s,
            "guard": self.guard})
        timeout = max(1, round(config.write_timeout_s))
        try:
            self._httpd = create_server(
                server.app, map=self._map, host=host, port=port, ident="depthstream",
                threads=threads or config.max_viewers + config.max_uploads + 8,
                channel_timeout=timeout, cleanup_interval=max(1, timeout // 2),
                outbuf_high_watermark=_OUTBUF_HIGH_BYTES,
                # the gate refuses what is over the limit (and drops it, up to a point)
                max_request_body_size=max(gate.max_body, DISCARD_MAX_BYTES) + 1,
                # ours (the guard's) comes first: waitress would stop accepting at its own
                connection_limit=config.max_connections + 16, asyncore_use_poll=True,
                expose_tracebacks=False)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SinkError(f"cannot listen on {host}:{port}: {reason}") from None
        for listener in self._listeners():
            listener.channel_class = self.channel_class
        self.gate = gate

    def _listeners(self) -> list[BaseWSGIServer]:
        return [d for d in list(self._map.values()) if isinstance(d, BaseWSGIServer)]

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._listeners()[0].getsockname()[1])

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop (safe from a signal handler or any thread)."""
        self._stop.set()
        listeners = self._listeners()
        if listeners:
            listeners[0].pull_trigger()

    def serve_forever(self) -> None:
        """Answer requests until :meth:`request_stop`; then stop everything, in order."""
        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=_SWEEP_S, map=self._map, use_poll=True, count=1)
                self.guard.sweep()
        finally:
            self._shutdown()

    def close(self) -> None:
        """Close without serving (when :meth:`serve_forever` never ran)."""
        self._stop.set()
        self._shutdown()

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.stop_timeout_s
        for listener in self._listeners():  # stop accepting; keep the wake-up trigger
            wasyncore.dispatcher.close(listener)
        stopping = threading.Thread(target=self.server.close if self.close_app else None,
                                    kwargs={"timeout_s": max(1.0, self.stop_timeout_s - 2.0)},
                                    name="depthstream-stop", daemon=True)
        stopping.start()
        while stopping.is_alive() and time.monotonic() < deadline - 1.0:
            wasyncore.loop(timeout=0.1, map=self._map, use_poll=True, count=1)
        self._httpd.task_dispatcher.shutdown(
            cancel_pending=True, timeout=max(0.1, deadline - time.monotonic()))
        wasyncore.close_all(self._map)
