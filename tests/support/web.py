"""Web server helpers: the production server (waitress) on 127.0.0.1 and a tiny HTTP client.

Starts threads: :func:`running` serves an app on an ephemeral port in a thread and
stops it (as SIGTERM would) on the way out. Touches no files.

::

    from support.web import Http, running

    with running(app) as client:
        status, body = client.upload(png)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import cv2
import numpy as np
from flask import Flask

from stream.web import DepthServer, HttpServer

__all__ = ["Http", "multipart", "png_bytes", "running"]


def png_bytes(bgr: np.ndarray, ext: str = ".png") -> bytes:
    """``bgr`` encoded as PNG (or ``ext``)."""
    ok, data = cv2.imencode(ext, bgr)
    assert ok
    return data.tobytes()


def multipart(data: bytes, name: str = "pic.png", **fields: str) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with the file in ``file``; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             .encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Http:
    """A tiny client for one server: JSON calls, multipart uploads, raw answers."""

    def __init__(self, port: int, token: str | None = None, timeout_s: float = 60.0) -> None:
        self.port = port
        self.token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None
                ) -> tuple[int, http.client.HTTPMessage, bytes]:
        headers = dict(headers or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.msg, resp.read()
        finally:
            conn.close()

    def json(self, path: str, method: str = "GET") -> tuple[int, dict]:
        status, _, body = self.request(method, path)
        return status, json.loads(body)

    def upload(self, data: bytes, name: str = "pic.png", **fields: str) -> tuple[int, dict]:
        body, content_type = multipart(data, name, **fields)
        status, _, out = self.request("POST", "/api/jobs", body, {"Content-Type": content_type})
        return status, json.loads(out)

    def wait_done(self, job_id: str, timeout_s: float = 300.0, poll_s: float = 0.25) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, body = self.json(f"/api/jobs/{job_id}")
            assert status == 200, body
            if body["status"] not in ("queued", "running"):
                return body
            time.sleep(poll_s)  # as the page polls; 20 clients polling faster slow the worker
        raise AssertionError(f"job {job_id} not finished after {timeout_s} s")


@contextlib.contextmanager
def running(app: Flask, token: str | None = None, close_app: bool = True) -> Iterator[Http]:
    """Serve ``app`` on waitress (127.0.0.1, ephemeral port); stop it (and the app) after."""
    server: DepthServer = app.extensions["depthstream"]
    httpd = HttpServer(server, "127.0.0.1", 0, close_app=close_app)
    thread = threading.Thread(target=httpd.serve_forever, name="test-httpd", daemon=True)
    thread.start()
    try:
        yield Http(httpd.port, token)
    finally:
        httpd.request_stop()
        thread.join(15)
        assert not thread.is_alive(), "the server did not stop"


def send_head(port: int, head: bytes) -> tuple[bytes, bytes]:
    """Send only a request's head (no body) and read the JSON answer: ``(head, body)``."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while b"}" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    head_out, _, body = answer.partition(b"\r\n\r\n")
    return head_out, body
