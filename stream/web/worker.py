"""Worker: the threads that own the web server's model and run its jobs, in two lanes.

Starts threads: :meth:`JobWorker.start` starts one thread per lane
(``depthstream-jobs-picture``, ``depthstream-jobs-video``), and each video job runs a
conversion whose pipeline starts its own threads (joined before the job ends). Touches
files: a job reads its ``input`` and writes its outputs (pictures, video, raw depth,
``depth16.zip``) in its folder; a cancelled or failed job's files are deleted at once,
and a finished job's ``input``.

Pictures and videos wait in separate lanes, each run by its own thread, so a picture
never waits behind a long video: the two lanes share the network frame by frame
(:class:`~stream.engines.estimator.SharedEstimator`), as the live view does. Each job
runs on the model it asked for (:mod:`stream.web.models`; built on first use), at the
server's precision.

A video's header may lie: every decoded frame is checked against the frame size limit
before the network sees it, and the job stops at the first one over it (as it does at
the first frame over the frame count limit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stream.core.errors import SourceError, StreamError
from stream.core.files import atomic_open
from stream.core.settings import RawFormat, StreamSettings
from stream.depth.colormap import minmax
from stream.engines.estimator import DepthEstimator, Pending, SharedEstimator
from stream.models.transforms import to_rgb
from stream.runtime.builder import convert
from stream.runtime.pictures import PictureSettings, render_picture
from stream.sinks.base import write_depth_raw, write_image
from stream.sources.capture import read_image

from .config import ServerConfig
from .jobs import Job, JobKind, JobStatus, JobStore, public_message
from .models import ModelChoice
from .uploads import frame_too_large

__all__ = ["CANCELLED", "STOPPED", "JobWorker", "QueueFullError"]

log = logging.getLogger(__name__)

#: Why a running job was stopped: a client cancelled it, or the server stops.
CANCELLED = "cancelled"
STOPPED = "server stopped"
_STOPPED_MESSAGE = "server stopped before this job finished; upload the file again"
_IDLE_CALL_S = 60.0


class QueueFullError(StreamError):
    """The job queue is full: the upload is refused for now (sending it later works)."""


class _Stopped(Exception):
    """A running job noticed its stop event between two steps."""


@dataclasses.dataclass
class _Run:
    """A running job's controls: its stop event, why it was set, and when it ended."""

    job_id: str
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    reason: str | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)

    def halt(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()

    def check(self) -> None:
        if self.stop.is_set():
            raise _Stopped


class JobWorker:
    """Two lanes of waiting jobs (pictures, videos), each run by its own thread, in order.

    The default model is built on the picture lane's thread and shared as a
    :class:`~stream.engines.estimator.SharedEstimator` (:attr:`estimator`), which owns the
    lock that makes the lanes and the live stream take turns on the network, frame by
    frame. :meth:`start` waits for it and re-raises its error. A job that asks for another
    model gets that model's shared estimator, built on first use (on its lane).

    Args:
        store: where jobs are read and updated.
        models: the models jobs may run on (the default one built at start).
        config: queue length, video limits.
        on_idle: called after each job and once a minute when idle (retention).
    """

    def __init__(self, store: JobStore, models: ModelChoice, config: ServerConfig,
                 on_idle: Callable[[], None] | None = None) -> None:
        self.store = store
        self.config = config
        self.models = models
        self._on_idle = on_idle or (lambda: None)
        self._cond = threading.Condition()
        self._waiting: dict[JobKind, deque[str]] = {kind: deque() for kind in JobKind}
        self._running: dict[str, _Run] = {}
        self._stopping = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._threads: dict[JobKind, threading.Thread] = {}
        self.jobs_run = 0

    @property
    def estimator(self) -> SharedEstimator | None:
        """The default model's shared estimator, once built."""
        return self.models.loaded()

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout_s: float = 300.0) -> JobWorker:
        """Start the lanes and wait until the model is built.

        Raises:
            StreamError: (e.g. ``WeightsError``, ``ConfigError``) if building it failed.
        """
        for kind in (JobKind.VIDEO, JobKind.PICTURE):
            self._threads[kind] = threading.Thread(
                target=self._lane, args=(kind,), name=f"depthstream-jobs-{kind.value}",
                daemon=True)
        for thread in self._threads.values():
            thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise StreamError(f"the model was not ready after {timeout_s:g} s")
        if self._error is not None:
            self.join()
            raise self._error
        return self

    def stop(self, reason: str = STOPPED) -> None:
        """End the lanes: waiting jobs fail, running ones stop early (and fail)."""
        with self._cond:
            self._stopping = True
            waiting = [job_id for lane in self._waiting.values() for job_id in lane]
            for lane in self._waiting.values():
                lane.clear()
            for run in self._running.values():
                run.halt(reason)
            self._cond.notify_all()
        for job_id in waiting:
            self._finish(job_id, JobStatus.FAILED, _STOPPED_MESSAGE)

    def join(self, timeout_s: float | None = 10.0) -> None:
        """Wait for the lanes to end (``timeout_s`` in all)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in self._threads.values():
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop and join (safe to call twice)."""
        self.stop()
        self.join()

    def __enter__(self) -> JobWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job in its lane.

        Raises:
            QueueFullError: its lane is full, or the server is stopping.
        """
        with self._cond:
            lane = self._waiting[job.kind]
            if self._stopping:
                raise QueueFullError("the server is stopping")
            if len(lane) >= self.config.max_queued:
                raise QueueFullError("the server is busy; try again in a minute")
            lane.append(job.id)
            self._cond.notify_all()

    def position(self, job_id: str) -> int | None:
        """Where a waiting job is in its lane (1: next), or ``None``."""
        with self._cond:
            for lane in self._waiting.values():
                if job_id in lane:
                    return list(lane).index(job_id) + 1
        return None

    @property
    def queued(self) -> int:
        """Jobs waiting in both lanes (not counting running ones)."""
        with self._cond:
            return sum(len(lane) for lane in self._waiting.values())

    def cancel(self, job_id: str, timeout_s: float = 5.0) -> bool:
        """Cancel a waiting or running job; wait until a running one has stopped.

        Returns:
            ``False`` if the job was neither waiting nor running.
        """
        with self._cond:
            run = self._running.get(job_id)
            lane = next((lane for lane in self._waiting.values() if job_id in lane), None)
            if lane is not None:
                lane.remove(job_id)
            elif run is not None:
                run.halt(CANCELLED)
            else:
                return False
        if run is None:
            self._finish(job_id, JobStatus.CANCELLED, "cancelled")
        else:
            run.done.wait(timeout_s)
        return True

    # -- lanes -----------------------------------------------------------------

    def _lane(self, kind: JobKind) -> None:
        if kind is JobKind.PICTURE:
            try:
                self.models.estimator()
            except BaseException as exc:  # noqa: BLE001 - handed to start(), which re-raises
                self._error = exc
            finally:
                self._ready.set()
        else:
            self._ready.wait()
        try:
            if self._error is None:
                self._serve_lane(kind)
        finally:
            if kind is JobKind.PICTURE:  # its thread built the model: it closes it, last
                self._threads[JobKind.VIDEO].join()
                self.models.close()

    def _serve_lane(self, kind: JobKind) -> None:
        last_idle = time.monotonic()
        while True:
            with self._cond:
                while not self._stopping and not self._waiting[kind]:
                    if time.monotonic() - last_idle > _IDLE_CALL_S and kind is JobKind.PICTURE:
                        break
                    self._cond.wait(1.0)
                if self._stopping:
                    return
                run = None
                if self._waiting[kind]:
                    run = _Run(self._waiting[kind].popleft())
                    self._running[run.job_id] = run
            if run is not None:
                try:
                    self._run_job(run)
                finally:
                    with self._cond:
                        self._running.pop(run.job_id, None)
                    run.done.set()
            last_idle = time.monotonic()
            try:
                self._on_idle()
            except Exception:  # retention must never end a lane
                log.exception("after-job housekeeping failed")

    def _start_job(self, job: Job) -> tuple[Job, SharedEstimator]:
        """The job's model (built now if need be), and the job with what it runs on."""
        estimator = self.models.estimator(job.settings.model)
        warning = self.models.warning(job.settings.model)
        info = {**job.info, "precision": estimator.describe().get("precision")}
        if warning:  # int8 past a failed self-check: the status says so while it runs
            info["warnings"] = [*info.get("warnings", ()), warning]
        return self.store.update(job.id, info=info), estimator

    def _run_job(self, run: _Run) -> None:
        start = time.perf_counter()
        try:
            job = self.store.update(run.job_id, status=JobStatus.RUNNING, progress=0.0)
        except KeyError:  # removed while it waited
            return
        try:
            job, estimator = self._start_job(job)
            if job.kind is JobKind.PICTURE:
                info, outputs = _run_picture(self.store, job, estimator, run)
            else:
                info, outputs = _run_video(self.store, job, estimator.sized_for(video=True),
                                           run, self.config)
            run.check()
        except Exception as exc:  # _Stopped, StreamError, or a bug
            self._failed(run, exc)
        else:
            warnings = [*job.info.get("warnings", ()), *info.pop("warnings", ())]
            info = {**job.info, **info,
                    "elapsed_ms": round((time.perf_counter() - start) * 1000.0, 1)}
            if warnings:
                info["warnings"] = warnings
            with contextlib.suppress(KeyError):
                self.store.update(job.id, status=JobStatus.DONE, progress=1.0, info=info,
                                  outputs=tuple(outputs))
            with contextlib.suppress(OSError):
                (self.store.job_dir(job.id) / "input").unlink()
        finally:
            self.jobs_run += 1

    def _failed(self, run: _Run, exc: BaseException) -> None:
        if not isinstance(exc, (StreamError, _Stopped)) and not run.stop.is_set():
            # a bug must not kill the lane; the page says what, the log says where
            log.error("job %s failed", run.job_id, exc_info=exc)
        self._finish(run.job_id, *_outcome(run, exc))

    def _finish(self, job_id: str, status: JobStatus, error: str) -> None:
        """End a job that did not succeed: its files go at once, its record stays."""
        try:
            job = self.store.update(job_id, status=status, error=error)
        except KeyError:  # evicted meanwhile
            return
        if job.status is status:  # not a job that had already finished
            self.store.clear_files(job_id)


def _outcome(run: _Run, exc: BaseException) -> tuple[JobStatus, str]:
    """The status and message of a job that did not succeed."""
    reason = run.reason if run.stop.is_set() else None
    if reason == CANCELLED:
        return JobStatus.CANCELLED, "cancelled"
    if reason == STOPPED:
        return JobStatus.FAILED, _STOPPED_MESSAGE
    if reason:  # a limit the header did not show
        return JobStatus.FAILED, reason
    if isinstance(exc, StreamError):
        return JobStatus.FAILED, public_message(exc)
    if isinstance(exc, _Stopped):
        return JobStatus.FAILED, "the job stopped early"
    return JobStatus.FAILED, f"internal error ({type(exc).__name__}); see the server's log"


class _FrameLimit:
    """A job's estimator that refuses a frame over the frame size limit (headers may lie).

    The first frame over it halts the job with the limit's message (the job fails with
    it) before the network sees the frame; everything else is the wrapped estimator's.
    Closing it leaves the wrapped (shared) estimator open.
    """

    def __init__(self, inner: DepthEstimator, config: ServerConfig, run: _Run) -> None:
        self.inner, self.config, self.run = inner, config, run
        self.frames = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _checked(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        too_large = frame_too_large(w, h, self.config, f"frame {self.frames + 1} is")
        if too_large and frame_too_large(h, w, self.config):  # upright or as stored
            self.run.halt(too_large)
            raise _Stopped
        self.frames += 1
        return rgb

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        return self.inner.predict(self._checked(rgb))

    def submit(self, rgb: np.ndarray) -> Pending:
        return self.inner.submit(self._checked(rgb))

    def predict_many(self, items: Iterable[tuple[Any, np.ndarray]]
                     ) -> Iterator[tuple[Any, np.ndarray]]:
        return self.inner.predict_many((tag, self._checked(rgb)) for tag, rgb in items)

    def close(self) -> None:
        """Nothing: the wrapped estimator is the worker's."""


def _run_video(store: JobStore, job: Job, estimator: DepthEstimator, run: _Run,
               config: ServerConfig) -> tuple[dict[str, Any], list[str]]:
    """Depth video (MP4, with the input's sound) and raw depth (16-bit PNGs in a zip)."""
    max_frames = config.max_video_frames
    folder = store.job_dir(job.id)
    raw = folder / "depth16"
    expected = job.info.get("frames") or round((job.info.get("duration_s") or 0)
                                               * (job.info.get("fps") or 0))

    def progress(done: int, total: int | None) -> None:
        if done > max_frames:  # the header said less (or nothing): stop, and say why
            run.halt(f"videos may have up to {max_frames} frames; this one has more")
        total = total or expected
        if total:  # the last few percent are the encoder's flush and the zip
            with contextlib.suppress(KeyError):
                store.update(job.id, progress=0.97 * min(done / total, 1.0))

    settings = StreamSettings(layout=job.settings.layout, cmap=job.settings.cmap,
                              invert=job.settings.invert, raw_dir=raw,
                              raw_format=RawFormat.PNG, overwrite=True)
    stats = convert(folder / "input", folder / "result.mp4", settings,
                    estimator=_FrameLimit(estimator, config, run), progress=progress,
                    stop_event=run.stop)
    run.check()
    if stats.frames_written == 0:
        raise SourceError("no frame of this video could be decoded")
    _zip_folder(raw, folder / "depth16.zip", run)
    shutil.rmtree(raw, ignore_errors=True)
    info = {"frames": stats.frames_written, "inference_ms": round(stats.inference_ms_mean, 1),
            "fps_processed": round(stats.fps, 2), "input_size": estimator.side}
    if stats.warnings:
        info["warnings"] = [public_message(w) for w in stats.warnings]
    return info, ["result.mp4", "depth16.zip"]


def _run_picture(store: JobStore, job: Job, estimator: DepthEstimator, run: _Run
                 ) -> tuple[dict[str, Any], list[str]]:
    """Depth of one picture: colour, side by side, 16-bit PNG and float32 ``.npy``.

    A metric model's depth is in metres: near is still warm in colour, the ``.npy`` holds
    metres and the 16-bit PNG millimetres (as depth cameras write them).
    """
    metric = estimator.spec.output.value == "metric"
    folder = store.job_dir(job.id)
    bgr = read_image(folder / "input")
    run.check()
    store.update(job.id, progress=0.1)
    depth, ms = estimator.predict(to_rgb(bgr, "bgr"))
    run.check()
    store.update(job.id, progress=0.8)
    lo, hi = minmax(depth)
    settings = PictureSettings(cmap=job.settings.cmap, invert=job.settings.invert)
    write_image(folder / "result.png", render_picture(bgr, depth, settings, metres=metric))
    run.check()
    write_image(folder / "side.png", render_picture(
        bgr, depth, dataclasses.replace(settings, side=True), metres=metric))
    run.check()
    write_depth_raw(folder / "depth16", depth, lo, hi, npy=True, metres=metric)
    info = {"width": bgr.shape[1], "height": bgr.shape[0], "inference_ms": round(ms, 1),
            "lo": lo, "hi": hi, "input_size": estimator.side}
    return info, ["result.png", "side.png", "depth16.png", "depth16.npy"]


def _zip_folder(folder: Path, target: Path, run: _Run) -> None:
    """Store every file of ``folder`` in a zip (PNGs are compressed already), atomically."""
    with atomic_open(target, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.iterdir()):
            run.check()  # a cancel during a long zip ends it (the part file is discarded)
            zf.write(path, path.name)
