"""Worker: the thread that owns the web server's model and runs its jobs, one at a time.

Starts threads: :meth:`JobWorker.start` starts the worker thread (``depthstream-jobs``),
and each video job runs a conversion whose pipeline starts its own threads (joined
before the job ends). Touches files: a job reads its ``input`` and writes its outputs
(pictures, video, raw depth, ``depth16.zip``) in its folder.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..builder import convert
from ..colormap import minmax
from ..errors import SourceError, StreamError
from ..files import atomic_open
from ..inference import DepthEstimator, SharedEstimator
from ..pictures import PictureSettings, render_picture
from ..settings import RawFormat, StreamSettings
from ..sinks import write_depth_raw, write_image
from ..sources import read_image
from ..transforms import to_rgb
from .jobs import Job, JobKind, JobStatus, JobStore

__all__ = ["JobWorker", "QueueFullError"]

log = logging.getLogger(__name__)


class QueueFullError(StreamError):
    """The job queue is full: the upload is refused for now (sending it later works)."""


class JobWorker:
    """The one thread that owns the estimator and runs jobs, one at a time, in order.

    The estimator is built on the worker thread by ``estimator_factory`` and shared as a
    :class:`~stream.inference.SharedEstimator` (:attr:`estimator`), which owns the lock
    that makes the live stream and the jobs take turns on the network, frame by frame.
    :meth:`start` waits for it and re-raises its error.

    Args:
        store: where jobs are read and updated.
        estimator_factory: builds the estimator, once, on the worker thread.
        max_queued: jobs waiting at most; :meth:`submit` refuses more.
    """

    def __init__(self, store: JobStore, estimator_factory: Callable[[], DepthEstimator],
                 max_queued: int = 64) -> None:
        self.store = store
        self._factory = estimator_factory
        self._queue: queue.Queue[str] = queue.Queue(maxsize=max_queued)
        self._stop = threading.Event()
        # Per video job: the pipeline sets its event on its own failures too, which
        # must end that job, not the worker.
        self._job_stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.estimator: SharedEstimator | None = None
        self.jobs_run = 0

    def start(self, timeout_s: float = 300.0) -> JobWorker:
        """Start the thread and wait until the model is built.

        Raises:
            StreamError: (e.g. ``WeightsError``, ``ConfigError``) if building it failed.
        """
        self._thread = threading.Thread(target=self._run, name="depthstream-jobs", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise StreamError(f"the model was not ready after {timeout_s:g} s")
        if self._error is not None:
            self.join()
            raise self._error
        return self

    def submit(self, job_id: str) -> None:
        """Queue a job.

        Raises:
            QueueFullError: the queue is full.
        """
        try:
            self._queue.put_nowait(job_id)
        except queue.Full:
            raise QueueFullError("the server is busy; try again in a minute") from None

    @property
    def queued(self) -> int:
        """Jobs waiting (not counting the running one)."""
        return self._queue.qsize()

    def stop(self) -> None:
        """Ask the thread to end; a running video job stops early (and fails)."""
        self._stop.set()
        self._job_stop.set()

    def join(self, timeout_s: float | None = 10.0) -> None:
        """Wait for the thread to end."""
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def close(self) -> None:
        """Stop and join (safe to call twice)."""
        self.stop()
        self.join()

    def __enter__(self) -> JobWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            estimator = SharedEstimator(self._factory())
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which re-raises
            self._error = exc
            self._ready.set()
            return
        self.estimator = estimator
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    job_id = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                self._run_job(job_id)
        finally:
            estimator.close()

    def _run_job(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            return
        start = time.perf_counter()
        self.store.update(job_id, status=JobStatus.RUNNING, progress=0.0)
        try:
            if job.kind is JobKind.PICTURE:
                info, outputs = self._run_picture(job)
            else:
                info, outputs = self._run_video(job)
        except StreamError as exc:
            self.store.update(job_id, status=JobStatus.FAILED, error=str(exc))
        except Exception as exc:  # a bug must not kill the worker; the page says what
            log.exception("job %s failed", job_id)
            self.store.update(job_id, status=JobStatus.FAILED,
                              error=f"internal error ({type(exc).__name__}: {exc})")
        else:
            info = {**job.info, **info,
                    "elapsed_ms": round((time.perf_counter() - start) * 1000.0, 1)}
            self.store.update(job_id, status=JobStatus.DONE, progress=1.0, info=info,
                              outputs=tuple(outputs))
        finally:
            self.jobs_run += 1

    def _progress(self, job_id: str, value: float) -> None:
        self.store.update(job_id, progress=min(1.0, max(0.0, float(value))))

    def _run_picture(self, job: Job) -> tuple[dict[str, Any], list[str]]:
        folder = self.store.job_dir(job.id)
        bgr = read_image(folder / "input")
        self._progress(job.id, 0.1)
        depth, ms = self.estimator.predict(to_rgb(bgr, "bgr"))
        self._progress(job.id, 0.8)
        lo, hi = minmax(depth)
        settings = PictureSettings(cmap=job.settings.cmap, invert=job.settings.invert)
        write_image(folder / "result.png", render_picture(bgr, depth, settings))
        write_image(folder / "side.png",
                    render_picture(bgr, depth, dataclasses.replace(settings, side=True)))
        write_depth_raw(folder / "depth16", depth, lo, hi, npy=True)
        info = {"width": bgr.shape[1], "height": bgr.shape[0], "inference_ms": round(ms, 1),
                "lo": lo, "hi": hi}
        return info, ["result.png", "side.png", "depth16.png", "depth16.npy"]

    def _run_video(self, job: Job) -> tuple[dict[str, Any], list[str]]:
        folder = self.store.job_dir(job.id)
        raw = folder / "depth16"
        shutil.rmtree(raw, ignore_errors=True)  # what an interrupted run left
        expected = job.info.get("frames") or round((job.info.get("duration_s") or 0)
                                                   * (job.info.get("fps") or 0))

        def progress(done: int, total: int | None) -> None:
            total = total or expected
            if total:  # the last few percent are the encoder's flush and the zip
                self._progress(job.id, 0.97 * min(done / total, 1.0))

        self._job_stop = threading.Event()
        if self._stop.is_set():
            self._job_stop.set()
        settings = StreamSettings(layout=job.settings.layout, cmap=job.settings.cmap,
                                  invert=job.settings.invert, raw_dir=raw,
                                  raw_format=RawFormat.PNG, overwrite=True)
        stats = convert(folder / "input", folder / "result.mp4", settings,
                        estimator=self.estimator, progress=progress, stop_event=self._job_stop)
        if stats.interrupted:
            raise StreamError("the server stopped before this video was finished; "
                              "upload it again")
        if stats.frames_written == 0:
            raise SourceError("no frame of this video could be decoded")
        _zip_folder(raw, folder / "depth16.zip")
        shutil.rmtree(raw, ignore_errors=True)
        info = {"frames": stats.frames_written, "inference_ms": round(stats.inference_ms_mean, 1),
                "fps_processed": round(stats.fps, 2)}
        if stats.warnings:
            info["warnings"] = list(stats.warnings)
        return info, ["result.mp4", "depth16.zip"]


def _zip_folder(folder: Path, target: Path) -> None:
    """Store every file of ``folder`` in a zip (PNGs are compressed already), atomically."""
    with atomic_open(target, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
