"""Live: one camera or URL pipeline fanned out to every MJPEG viewer of the web server.

Starts threads: the first viewer starts a :class:`stream.pipeline.Pipeline` (its own
capture, inference and render threads), and the last one to leave starts a
``threading.Timer`` that stops it after a grace period. Touches no files.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import cv2

from ..builder import build_live
from ..errors import StreamError
from ..inference import DepthEstimator
from ..pipeline import Pipeline
from ..records import DepthFrame
from ..render import Renderer
from ..settings import Layout, StreamSettings, parse_enum
from ..sinks import Sink, SinkContext
from ..sources import Source

__all__ = ["LiveStream", "LiveUnavailableError"]

log = logging.getLogger(__name__)


class LiveUnavailableError(StreamError):
    """The live view cannot start now: the camera or URL does not open, or the server stops."""


class _HubSink(Sink):
    """Hands each DepthFrame of the live pipeline on (render thread), then says it ended."""

    def __init__(self, on_frame: Callable[[DepthFrame, int], None],
                 on_end: Callable[[], None]) -> None:
        self._on_frame = on_frame
        self._on_end = on_end
        self._dropped: Callable[[], int] = lambda: 0

    def open(self, context: SinkContext) -> None:  # noqa: D102
        self._dropped = context.count_dropped

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        self._on_frame(frame, self._dropped())

    def close(self) -> None:  # noqa: D102
        self._on_end()


class _Viewer:
    """One viewer's MJPEG body: iterates parts; ``close()`` (werkzeug calls it) lets go.

    A class, not a generator: a generator that never started would not run its
    ``finally`` when closed, and the viewer count would leak.

    Args:
        next_part: ``next_part(last_seq)`` gives ``(seq, part)`` or ``None`` at the end.
        release: called once, when the viewer is closed.
    """

    def __init__(self, next_part: Callable[[int], tuple[int, bytes] | None],
                 release: Callable[[], None]) -> None:
        self._next_part = next_part
        self._release = release
        self._seq = -1
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        part = self._next_part(self._seq)
        if part is None:
            self.close()
            raise StopIteration
        self._seq = part[0]
        return part[1]

    def close(self) -> None:
        """Let go of the stream (safe to call twice)."""
        if not self._closed:
            self._closed = True
            self._release()


class LiveStream:
    """One live pipeline shared by every viewer of ``/live/stream.mjpg``.

    The first viewer opens the source and starts the pipeline; after the last one
    leaves it runs ``idle_s`` longer (a page reload keeps it) and stops, so an unwatched
    camera costs nothing. Each frame is JPEG-encoded at most once per layout, however
    many viewers watch it; a slow viewer skips frames instead of holding others back.

    Args:
        open_source: opens the camera or URL (a :class:`stream.sources.LiveSource`).
        estimator: gives the (shared) estimator when a pipeline starts.
        settings: smoothing and colours of the live pipeline.
        idle_s: how long the pipeline outlives its last viewer.
        jpeg_quality: JPEG quality of the stream, 1..100.
        frame_timeout_s: a viewer's stream ends when no frame came for this long.
    """

    BOUNDARY = "depthframe"

    def __init__(self, open_source: Callable[[], Source],
                 estimator: Callable[[], DepthEstimator],
                 settings: StreamSettings | None = None, idle_s: float = 3.0,
                 jpeg_quality: int = 80, frame_timeout_s: float = 15.0) -> None:
        self._open_source = open_source
        self._estimator = estimator
        self.settings = settings or StreamSettings()
        self.idle_s = idle_s
        self.jpeg_quality = int(jpeg_quality)
        self.frame_timeout_s = frame_timeout_s
        self._lock = threading.RLock()  # pipeline start/stop and viewer count
        self._cond = threading.Condition()  # new frames
        self._pipeline: Pipeline | None = None
        self._generation = 0
        self._running = False
        self._viewers = 0
        self._idle_timer: threading.Timer | None = None
        self._closed = False
        self._latest: DepthFrame | None = None
        self._seq = 0
        self._arrivals: deque[float] = deque(maxlen=60)  # time.monotonic() of each frame
        self._dropped = 0
        self._jpegs: dict[Layout, tuple[int, bytes]] = {}
        self._encode_lock = threading.Lock()
        self.error: str | None = None
        self.pipelines_started = 0
        self.size_wh: tuple[int, int] | None = None

    # -- viewers ---------------------------------------------------------------

    def viewer(self, layout: Layout | str = Layout.DEPTH) -> _Viewer:
        """A new viewer's MJPEG body (an iterable of parts; closing it lets go).

        Raises:
            ConfigError: ``layout`` is not a layout.
            LiveUnavailableError: the camera or URL cannot be opened, or the server is
                stopping.
        """
        if not isinstance(layout, Layout):
            layout = str(layout).strip().lower()
        layout = parse_enum(Layout, layout, "layout")
        self._acquire()
        return _Viewer(lambda last_seq: self.next_part(layout, last_seq), self._release)

    def _acquire(self) -> None:
        with self._lock:
            if self._closed:
                raise LiveUnavailableError("the server is stopping")
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            if not self._running:
                try:
                    self._start_pipeline()
                except StreamError as exc:
                    raise LiveUnavailableError(str(exc)) from exc
            self._viewers += 1

    def _release(self) -> None:
        with self._lock:
            self._viewers -= 1
            if self._viewers == 0 and not self._closed:
                timer = threading.Timer(self.idle_s, self._stop_if_idle)
                timer.daemon = True
                self._idle_timer = timer
                timer.start()

    def _stop_if_idle(self) -> None:
        with self._lock:
            if self._viewers == 0:
                self._stop_pipeline()

    def next_part(self, layout: Layout, last_seq: int) -> tuple[int, bytes] | None:
        """The next frame after ``last_seq`` as an MJPEG part, or ``None`` at the end."""
        deadline = time.monotonic() + self.frame_timeout_s
        with self._cond:
            while True:
                if self._closed or not self._running:
                    return None
                if self._seq != last_seq and self._latest is not None:
                    seq, frame = self._seq, self._latest
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.5))
        jpeg = self._jpeg(layout, seq, frame)
        head = (f"--{self.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(jpeg)}\r\n\r\n").encode()
        return seq, head + jpeg + b"\r\n"

    def _jpeg(self, layout: Layout, seq: int, frame: DepthFrame) -> bytes:
        with self._encode_lock:
            cached = self._jpegs.get(layout)
            if cached is not None and cached[0] == seq:
                return cached[1]
            image = Renderer(layout, cmap=self.settings.cmap,
                             invert=self.settings.invert).render(frame)
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise StreamError("cannot encode a live frame as JPEG")
            self._jpegs[layout] = (seq, data.tobytes())
            return self._jpegs[layout][1]

    # -- pipeline --------------------------------------------------------------

    def _start_pipeline(self) -> None:
        self._stop_pipeline()  # join what ended by itself (a stream that stopped)
        estimator = self._estimator()  # before the camera: no model, nothing to open
        self._generation += 1
        generation = self._generation
        sink = _HubSink(lambda frame, dropped: self._on_frame(frame, generation, dropped),
                        lambda: self._on_end(generation))
        try:  # the builder closes the source and the sink if it fails
            pipeline = build_live(self._open_source(), self.settings, estimator=estimator,
                                  extra_sinks=[sink])
        except StreamError as exc:  # goes to the viewer and to the status
            self.error = str(exc)
            raise
        with self._cond:
            self._latest, self._seq = None, self._seq + 1
            self._arrivals.clear()
            self._running = True
        self.error = None
        self.size_wh = pipeline.source.info.size_wh
        self._pipeline = pipeline.start()
        self.pipelines_started += 1

    def _stop_pipeline(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        with self._cond:
            self._running = False
            self._generation += 1  # what the stopped pipeline still sends is ignored
            self._cond.notify_all()
        if pipeline is None:
            return
        pipeline.stop()
        try:
            pipeline.join(10.0)
        except StreamError as exc:
            self.error = str(exc)
            log.warning("live stream stopped: %s", exc)

    def _on_frame(self, frame: DepthFrame, generation: int, dropped: int) -> None:
        with self._cond:
            if generation != self._generation:
                return
            self._latest = frame
            self._seq += 1
            self._dropped = dropped
            self._arrivals.append(time.monotonic())
            self._cond.notify_all()

    def _on_end(self, generation: int) -> None:
        with self._cond:
            if generation == self._generation:
                self._running = False
                if self.error is None:
                    self.error = "the live source stopped sending frames"
                self._cond.notify_all()

    # -- status ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``running``, ``viewers``, ``fps`` (last 2 s), ``inference_ms``, ``error``..."""
        now = time.monotonic()
        with self._cond:
            recent = [t for t in self._arrivals if now - t <= 2.0]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
            frame = self._latest
            running = self._running
            dropped = self._dropped
        return {
            "running": running, "viewers": self._viewers, "fps": round(fps, 2),
            "inference_ms": round(frame.inference_ms, 1) if frame is not None else None,
            "latency_ms": round((now - frame.captured) * 1000.0, 1)
            if frame is not None and running else None,
            "size_wh": list(self.size_wh) if self.size_wh else None,
            "dropped": dropped, "error": None if running else self.error,
        }

    def close(self) -> None:
        """Stop the pipeline and end every viewer's stream (safe to call twice)."""
        with self._lock:
            self._closed = True
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            self._stop_pipeline()
