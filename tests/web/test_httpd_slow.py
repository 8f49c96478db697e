"""Slow clients (slowloris): a deadline for each request head, and room for real requests.

The probe is the issue's, smaller: slow connections on loopback that send one header line
now and then and never finish their request head, reconnecting when closed; meanwhile
``/api/info`` must answer at once. Bounded in connections and seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.fakes import cheap_estimator
from support.web import running

from stream.web import create_app


@contextmanager
def slow_clients(port: int, count: int, every_s: float) -> Iterator[dict[str, int]]:
    """``count`` connections that send a header line every ``every_s`` and never finish."""
    stop = threading.Event()
    seen = {"closed": 0}

    def connect() -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            return sock
        except OSError:
            return None

    def run() -> None:
        socks = [connect() for _ in range(count)]
        while not stop.wait(every_s):
            for i, sock in enumerate(socks):
                try:
                    if sock is None:
                        raise OSError
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:  # closed by the server: come back, as an attacker does
                    seen["closed"] += 1
                    if sock is not None:
                        sock.close()
                    socks[i] = connect()
        for sock in socks:
            if sock is not None:
                sock.close()

    thread = threading.Thread(target=run, name="test-slow-clients", daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # they are all connected (and the server is full)
        yield seen
    finally:
        stop.set()
        thread.join(10)


def test_slow_clients_cannot_lock_out_a_real_request(tmp_path: Path) -> None:
    # 60 slow connections, room for 32, a head deadline far longer than the probe's bound:
    # only making room at once (not waiting for the deadline) answers within the bound.
    app = create_app(tmp_path, cheap_estimator, max_connections=32, header_timeout_s=8.0,
                     start=False)
    with running(app) as client, slow_clients(client.port, 60, every_s=0.5) as seen:
        client.timeout_s = 10.0
        waits = []
        end = time.monotonic() + 6.0
        while time.monotonic() < end:
            start = time.monotonic()
            status, body = client.json("/api/info")
            waits.append(time.monotonic() - start)
            assert status == 200 and "max_image_bytes" in body
            time.sleep(0.3)
        print(f"\n/api/info under 60 slow connections: {len(waits)} answers, slowest "
              f"{max(waits):.2f} s; slow connections closed {seen['closed']} times")
        assert max(waits) < 2.0
        assert seen["closed"] > 0  # room was made by closing slow ones


def test_a_request_head_has_a_deadline_that_trickling_does_not_extend(tmp_path: Path) -> None:
    app = create_app(tmp_path, cheap_estimator, header_timeout_s=1.0, start=False)
    with running(app) as client:
        sock = socket.create_connection(("127.0.0.1", client.port), timeout=5)
        start = time.monotonic()
        sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed_after = None
        try:
            while time.monotonic() - start < 8.0:
                time.sleep(0.2)
                sock.sendall(b"X-Slow: 1\r\n")  # a byte now and then: still a deadline
        except OSError:  # reset by the server
            closed_after = time.monotonic() - start
        finally:
            sock.close()
        assert closed_after is not None, "the slow request head was never cut off"
        assert 0.9 <= closed_after <= 3.0, closed_after
        # a prompt client on a fresh connection is served as ever
        assert client.json("/api/info")[0] == 200
