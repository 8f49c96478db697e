"""Fake camera: an MJPEG-over-HTTP server on 127.0.0.1 (starts threads; reads a clip if given).

::

    from support.mjpeg import MjpegServer

    with MjpegServer(frames, fps=30).start() as camera:
        LiveSource.from_url(camera.url)
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .clips import read_video

__all__ = ["MjpegServer"]


class MjpegServer:
    """An MJPEG-over-HTTP camera on 127.0.0.1 (ephemeral port), paced at ``fps``.

    Serves ``multipart/x-mixed-replace`` JPEG parts, as IP cameras do, looping over the
    given frames. Each client gets its own paced stream; a slow client is throttled by
    TCP, as with a real camera. Bounded: it stops on ``stop()`` or after ``max_s``.

    Args:
        frames_or_clip: BGR frames, or a video file whose frames are served.
        fps: frames per second to send.
        max_s: longest time one client is served.

    Example:
        >>> with MjpegServer([img], fps=30).start() as server:  # doctest: +SKIP
        ...     cv2.VideoCapture(server.url)
    """

    def __init__(self, frames_or_clip: Sequence[np.ndarray] | str | Path, fps: float = 30.0,
                 max_s: float = 120.0) -> None:
        if isinstance(frames_or_clip, (str, Path)):
            frames = read_video(frames_or_clip)["images"]
        else:
            frames = list(frames_or_clip)
        if not frames:
            raise ValueError("MjpegServer needs at least one frame")
        self.jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
                      for f in frames]
        self.fps = fps
        self.max_s = max_s
        self.sent = 0
        self._stop = threading.Event()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/stream.mjpg``."""
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"

    def start(self) -> MjpegServer:
        """Listen and serve in a daemon thread; return ``self``."""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                start = time.monotonic()
                n = 0
                while not owner._stop.is_set() and time.monotonic() - start < owner.max_s:
                    jpeg = owner.jpegs[n % len(owner.jpegs)]
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                                         + jpeg + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return  # the client went away
                    n += 1
                    owner.sent += 1
                    # An absolute schedule: the rate holds however long a write took.
                    delay = start + n / owner.fps - time.monotonic()
                    if delay > 0:
                        owner._stop.wait(delay)

            def log_message(self, *args: object) -> None:
                pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="mjpeg-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (clients see the stream end)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MjpegServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
