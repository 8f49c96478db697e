"""Live: one camera or URL pipeline fanned out to every MJPEG viewer of the web server.

Starts threads: the first viewer starts a :class:`stream.runtime.pipeline.Pipeline` (its own
capture, inference and render threads), and the last one to leave starts a
``threading.Timer`` that stops it after a grace period. Touches no files. The number of
viewers is capped; a viewer that stops reading is let go by the HTTP server's write
timeout (:mod:`stream.web.httpd`), which closes its body.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import cv2

from stream.core.errors import StreamError
from stream.core.records import DepthFrame
from stream.core.settings import Layout, StreamSettings, parse_enum
from stream.depth.render import Renderer
from stream.engines.estimator import DepthEstimator
from stream.runtime.builder import build_live
from stream.runtime.pipeline import Pipeline
from stream.sinks.base import Sink, SinkContext
from stream.sources.capture import Source

__all__ = ["LiveBusyError", "LiveStream", "LiveUnavailableError"]

log = logging.getLogger(__name__)


class LiveUnavailableError(StreamError):
    """The live view cannot start now: the camera or URL does not open, or the server stops."""


class LiveBusyError(LiveUnavailableError):
    """As many viewers as the server allows watch already."""


# States of the shared pipeline; only the thread that moved it to STARTING or STOPPING
# moves it on, outside the lock.
_IDLE, _STARTING, _RUNNING, _STOPPING = "idle", "starting", "running", "stopping"


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


class _JpegCache:
    """The latest frame as a JPEG, per layout: encoded once however many viewers want it."""

    def __init__(self, settings: StreamSettings, quality: int) -> None:
        self.settings = settings
        self.quality = quality
        self._lock = threading.Lock()
        self._jpegs: dict[Layout, tuple[int, bytes]] = {}

    def get(self, layout: Layout, seq: int, frame: DepthFrame) -> bytes:
        with self._lock:
            cached = self._jpegs.get(layout)
            if cached is not None and cached[0] == seq:
                return cached[1]
            image = Renderer(layout, cmap=self.settings.cmap,
                             invert=self.settings.invert).render(frame)
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise StreamError("cannot encode a live frame as JPEG")
            self._jpegs[layout] = (seq, data.tobytes())
            return self._jpegs[layout][1]


class LiveStream:
    """One live pipeline shared by every viewer of ``/live/stream.mjpg``.

    The first viewer opens the source and starts the pipeline; after the last one
    leaves it runs ``idle_s`` longer (a page reload keeps it) and stops, so an unwatched
    camera costs nothing. Each frame is JPEG-encoded at most once per layout, however
    many viewers watch it; a slow viewer skips frames instead of holding others back.

    The lock guards state only: the source is opened and the pipeline joined outside it
    (a viewer that needs the pipeline meanwhile waits on the condition), so a slow
    camera never holds up the status, the frames, or a running stream's viewers.

    Args:
        open_source: opens the camera or URL (a :class:`stream.sources.capture.LiveSource`).
        estimator: gives the (shared) estimator when a pipeline starts.
        settings: smoothing and colours of the live pipeline.
        idle_s: how long the pipeline outlives its last viewer.
        jpeg_quality: JPEG quality of the stream, 1..100.
        frame_timeout_s: a viewer's stream ends when no frame came for this long.
        max_viewers: viewers at once; more raise :class:`LiveBusyError`.
        join_timeout_s: longest wait for a stopping pipeline's threads.
    """

    BOUNDARY = "depthframe"

    def __init__(self, open_source: Callable[[], Source],
                 estimator: Callable[[], DepthEstimator],
                 settings: StreamSettings | None = None, idle_s: float = 3.0,
                 jpeg_quality: int = 80, frame_timeout_s: float = 15.0,
                 max_viewers: int = 8, join_timeout_s: float = 10.0) -> None:
        self._open_source = open_source
        self._estimator = estimator
        self.settings = settings or StreamSettings()
        self.idle_s = idle_s
        self.frame_timeout_s = frame_timeout_s
        self.max_viewers = int(max_viewers)
        self.join_timeout_s = join_timeout_s
        self._cond = threading.Condition(threading.Lock())  # state, viewers and frames
        self._state = _IDLE
        self._pipeline: Pipeline | None = None
        self._generation = 0
        self._alive = False  # frames flow: started and not ended by itself
        self._viewers = 0
        self._idle_timer: threading.Timer | None = None
        self._closed = False
        self._latest: DepthFrame | None = None
        self._seq = 0
        self._arrivals: deque[float] = deque(maxlen=60)  # time.monotonic() of each frame
        self._dropped = 0
        self._jpegs = _JpegCache(self.settings, int(jpeg_quality))
        self.error: str | None = None
        self.pipelines_started = 0
        self.size_wh: tuple[int, int] | None = None

    # -- viewers ---------------------------------------------------------------

    def viewer(self, layout: Layout | str = Layout.DEPTH) -> _Viewer:
        """A new viewer's MJPEG body (an iterable of parts; closing it lets go).

        Raises:
            ConfigError: ``layout`` is not a layout.
            LiveBusyError: ``max_viewers`` watch already.
            LiveUnavailableError: the camera or URL cannot be opened, or the server is
                stopping.
        """
        if not isinstance(layout, Layout):
            layout = str(layout).strip().lower()
        layout = parse_enum(Layout, layout, "layout")
        with self._cond:
            if self._closed:
                raise LiveUnavailableError("the server is stopping")
            if self._viewers >= self.max_viewers:
                raise LiveBusyError(f"{self.max_viewers} viewers watch already; "
                                    "try again later")
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
            self._viewers += 1
        try:
            self._ensure_running()
        except BaseException:
            self._release()
            raise
        return _Viewer(lambda last_seq: self.next_part(layout, last_seq), self._release)

    def _ensure_running(self) -> None:
        """Start the pipeline unless it runs; wait while another viewer starts or stops it."""
        while True:
            with self._cond:
                if self._closed:
                    raise LiveUnavailableError("the server is stopping")
                if self._state == _RUNNING and self._alive:
                    return
                if self._state in (_STARTING, _STOPPING):
                    self._cond.wait(0.5)
                    continue
                if self._state == _RUNNING:  # it ended by itself: join it, then start anew
                    stopping = self._take_pipeline()
                else:
                    stopping = None
                    self._state = _STARTING
                    self._generation += 1
                    generation = self._generation
            if stopping is not None:
                self._join(stopping)
                continue
            self._start(generation)
            return

    def _release(self) -> None:
        with self._cond:
            self._viewers -= 1
            if self._viewers == 0 and not self._closed:
                timer = threading.Timer(self.idle_s, self._stop_if_idle)
                timer.daemon = True
                self._idle_timer = timer
                timer.start()

    def _stop_if_idle(self) -> None:
        with self._cond:
            if self._viewers != 0 or self._state != _RUNNING:
                return
            pipeline = self._take_pipeline()
        self._join(pipeline)

    def next_part(self, layout: Layout, last_seq: int) -> tuple[int, bytes] | None:
        """The next frame after ``last_seq`` as an MJPEG part, or ``None`` at the end."""
        deadline = time.monotonic() + self.frame_timeout_s
        with self._cond:
            while True:
                if self._closed or not self._alive:
                    return None
                if self._seq != last_seq and self._latest is not None:
                    seq, frame = self._seq, self._latest
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.5))
        jpeg = self._jpegs.get(layout, seq, frame)
        head = (f"--{self.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(jpeg)}\r\n\r\n").encode()
        return seq, head + jpeg + b"\r\n"

    # -- pipeline (opened, started and joined outside the lock) -----------------

    def _start(self, generation: int) -> None:
        """Open the source and start a pipeline; the state is STARTING until it returns."""
        sink = _HubSink(lambda frame, dropped: self._on_frame(frame, generation, dropped),
                        lambda: self._on_end(generation))
        try:
            # before the camera: no model, nothing to open
            estimator = self._estimator().sized_for(live=True)
            # the builder closes the source and the sink if it fails
            pipeline = build_live(self._open_source(), self.settings, estimator=estimator,
                                  extra_sinks=[sink])
            pipeline.start()
        except StreamError as exc:  # goes to the viewer and to the status
            with self._cond:
                self.error = str(exc)
                self._state = _IDLE
                self._cond.notify_all()
            raise LiveUnavailableError(str(exc)) from exc
        with self._cond:
            self._pipeline = pipeline
            self._latest, self._seq = None, self._seq + 1
            self._arrivals.clear()
            self._alive = True
            self._state = _RUNNING
            self.error = None
            self.size_wh = pipeline.source.info.size_wh
            self.pipelines_started += 1
            self._cond.notify_all()
            closed = self._closed
            stopping = self._take_pipeline() if closed else None
        if stopping is not None:  # close() came while the camera opened
            self._join(stopping)
            raise LiveUnavailableError("the server is stopping")

    def _take_pipeline(self) -> Pipeline | None:
        """Under the lock: detach the pipeline (STOPPING); its late frames are ignored."""
        pipeline, self._pipeline, self._state, self._alive = self._pipeline, None, _STOPPING, False
        self._generation += 1
        self._arrivals.clear()
        self._cond.notify_all()
        return pipeline

    def _join(self, pipeline: Pipeline | None) -> None:
        """Outside the lock: stop and join a detached pipeline, then IDLE."""
        try:
            if pipeline is not None:
                pipeline.stop()
                pipeline.join(self.join_timeout_s)
        except StreamError as exc:
            self.error = str(exc)
            log.warning("live stream stopped: %s", exc)
        finally:
            with self._cond:
                self._state = _IDLE
                self._cond.notify_all()

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
                self._alive = False
                self._arrivals.clear()
                self.error = self.error or "the live source stopped sending frames"
                self._cond.notify_all()

    # -- status ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``running``, ``viewers``, ``fps`` (last 2 s; 0 when stopped), ``error``..."""
        now = time.monotonic()
        with self._cond:
            running = self._alive
            recent = [t for t in self._arrivals if now - t <= 2.0] if running else []
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
            frame = self._latest
            dropped, viewers, error = self._dropped, self._viewers, self.error
        return {
            "running": running, "viewers": viewers, "max_viewers": self.max_viewers,
            "fps": round(fps, 2),
            "inference_ms": round(frame.inference_ms, 1) if frame is not None else None,
            "latency_ms": round((now - frame.captured) * 1000.0, 1)
            if frame is not None and running else None,
            "size_wh": list(self.size_wh) if self.size_wh else None,
            "dropped": dropped, "error": None if running else error,
        }

    def close(self) -> None:
        """Stop the pipeline and end every viewer's stream (safe to call twice)."""
        with self._cond:
            self._closed = True
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            pipeline = self._take_pipeline() if self._state == _RUNNING else None
            self._cond.notify_all()
        if pipeline is not None:
            self._join(pipeline)
