"""Window saver: the live window's file writer (snapshots and recordings) on its own thread.

Encoding a PNG or a video frame and syncing it to disk can take longer than a frame of
the display; done on the window thread it would make keys and redraws wait. The window
thread hands the work (frozen :class:`~stream.core.records.DepthFrame` s and
:class:`~stream.depth.render.Renderer` s) to a :class:`Saver`, which starts one thread, opens
and closes every file on it (:mod:`stream.window.snapshot`), and reports each result in one
line. Touches files; starts one thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stream.core.errors import StreamError
from stream.core.records import DepthFrame, VideoInfo
from stream.core.settings import EncoderSettings
from stream.depth.render import Renderer
from stream.window.snapshot import Recorder, write_snapshot

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Saver"]

_POLL_S = 0.1


class Saver:
    """Snapshots and recordings written on a thread of their own, in the order asked.

    Requests never block the caller. Recording frames that arrive while more than
    ``max_pending`` wait are dropped (counted in the recording's line), so a slow disk
    cannot hold frames without bound. :meth:`stop` finishes what was asked (a recording
    under way is closed, playable) and ends the thread.

    Args:
        folder: where snapshots and recordings go (an existing folder).
        info: the source's stream description (size and rate of recordings).
        encoder: codec, CRF and preset of recordings.
        announce: called with one line per snapshot or recording.
        warn: called with one line per failure (the run goes on).
        max_pending: recording frames allowed to wait.
    """

    def __init__(self, folder: str | os.PathLike, info: VideoInfo,
                 encoder: EncoderSettings | None, announce: Callable[[str], None],
                 warn: Callable[[str], None], max_pending: int = 8) -> None:
        self._recorder = Recorder(folder, info, encoder)  # used on the saver thread only
        self.announce, self.warn = announce, warn
        self.max_pending = max_pending
        self._cond = threading.Condition()
        self._jobs: deque[tuple[Any, ...]] = deque()
        self._pending_frames = 0
        self._ended = False
        self._recording_since: float | None = None
        self._dropped = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="depthstream-saver",
                                        daemon=True)

    def start(self) -> Self:
        """Start the thread; return ``self``."""
        self._thread.start()
        return self

    @property
    def recording_since(self) -> float | None:
        """``time.monotonic()`` when the recording asked for began, or ``None``."""
        with self._cond:
            return self._recording_since

    def snapshot(self, frame: DepthFrame, renderer: Renderer) -> None:
        """Write ``frame``'s four snapshot files (colours from ``renderer``)."""
        self._put(("snapshot", frame, renderer))

    def toggle_recording(self, renderer: Renderer) -> bool:
        """Start a recording in ``renderer``'s layout, or stop the one under way.

        Returns:
            Whether a recording is under way now.
        """
        with self._cond:
            starting = self._recording_since is None
            self._recording_since = time.monotonic() if starting else None
        self._put(("start", renderer) if starting else ("stop",))
        return starting

    def record(self, frame: DepthFrame) -> None:
        """Add ``frame`` to the recording under way (if any; dropped if too many wait)."""
        with self._cond:
            if self._recording_since is None:
                return
            if self._pending_frames >= self.max_pending:
                self._dropped += 1
                return
            self._pending_frames += 1
        self._put(("frame", frame))

    def stop(self, timeout: float | None = None) -> None:
        """Finish the work asked for, close a recording, end the thread.

        Raises:
            StreamError: what failed unexpectedly on the saver thread.
        """
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _put(self, job: tuple[Any, ...]) -> None:
        with self._cond:
            self._jobs.append(job)
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._jobs and not self._ended:
                        self._cond.wait(_POLL_S)
                    if not self._jobs:
                        return
                    job = self._jobs.popleft()
                    if job[0] == "frame":
                        self._pending_frames -= 1
                self._do(job)
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop()
            self._error = exc
        finally:
            self._finish_recording()

    def _do(self, job: tuple[Any, ...]) -> None:
        kind = job[0]
        if kind == "snapshot":
            frame = job[1]
            try:
                paths = write_snapshot(self._recorder.folder, frame, job[2])
            except StreamError as exc:
                self.warn(f"snapshot failed: {exc}")
                return
            self.announce(f"snapshot at {frame.timestamp:.3f} s: "
                          f"{', '.join(str(p) for p in paths)}")
        elif kind == "start":
            self._finish_recording()
            try:
                self.announce(f"recording to {self._recorder.start(job[1])}")
            except StreamError as exc:
                self._failed(f"cannot record: {exc}")
        elif kind == "frame":
            if self._recorder.active:
                try:
                    self._recorder.write(job[1])
                except StreamError as exc:
                    self._failed(f"recording failed: {exc}")
                    self._finish_recording()
        else:
            self._finish_recording()

    def _failed(self, message: str) -> None:
        with self._cond:
            self._recording_since = None
        self.warn(message)

    def _finish_recording(self) -> None:
        if not self._recorder.active:
            return
        with self._cond:
            dropped, self._dropped = self._dropped, 0
        try:
            recording = self._recorder.stop()
        except StreamError as exc:
            self.warn(f"recording failed: {exc}")
            return
        if recording is None or not recording.frames:
            self.announce("recording stopped before its first frame: no file written")
        else:
            extra = f" ({dropped} dropped: the disk was too slow)" if dropped else ""
            self.announce(f"recorded {recording}{extra}")
