"""Batch progress: one bar for every frame of the run, failure lines, the summary table.

Writes to the terminal (stderr for the bar and failures, stdout for the summary); starts
no threads, touches no files (``--stats`` is written by :mod:`stream.batch.runner`).
The bar counts frames written across the whole cluster, so its rate is the cluster's
frames per second and its ETA the run's; files done and workers busy are its postfix.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from .report import BatchReport

__all__ = ["BatchProgress", "summary_table"]


class BatchProgress:
    """What the user sees while a batch runs (subclass it to watch a run from code).

    Args:
        enabled: draw the bar (failures are printed either way).
        stream: where the bar and failure lines go.
    """

    def __init__(self, enabled: bool = True, stream: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._bar: Any = None
        self._files = 0

    def start(self, total_frames: int | None, files: int, skipped: int,
              workers: int, cpus_per_worker: float, nodes: int) -> None:
        """The run begins: ``files`` to convert (``skipped`` done before)."""
        self._files = files
        if skipped:
            self._write(f"{skipped} file(s) done by an earlier run with these settings: "
                        f"skipped (--overwrite redoes them)")
        self._write(f"{files} file(s) on {workers} worker(s) x {cpus_per_worker:g} CPU(s), "
                    f"{nodes} node(s)")
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total_frames, desc="batch", unit="frame", file=self.stream,
                             dynamic_ncols=True, smoothing=0.1)
            self._bar.set_postfix_str(f"files 0/{files}")

    def update(self, frames: int, files_done: int, workers: list[dict[str, Any]]) -> None:
        """``frames`` written so far in all, ``files_done`` finished (or failed)."""
        if self._bar is None:
            return
        if frames > self._bar.n:  # a retried segment starts over; the bar does not go back
            self._bar.update(frames - self._bar.n)
        busy = sum(1 for w in workers if w.get("task"))
        self._bar.set_postfix_str(f"files {files_done}/{self._files}, "
                                  f"{busy}/{len(workers)} workers busy", refresh=False)

    def failed(self, name: str, reason: str) -> None:
        """One line for a file that failed."""
        self._write(f"depthstream: failed: {name}: {reason}")

    def close(self) -> None:
        """Finish the bar (safe to call twice)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)


def summary_table(report: BatchReport, max_rows: int = 40) -> str:
    """The per-file results and the totals as a plain-text table."""
    rows = [("file", "status", "frames", "seconds", "fps", "nodes")]
    for f in report.files[:max_rows]:
        fps = f"{f.frames / f.seconds:.1f}" if f.seconds > 0 and f.frames else "-"
        rows.append((f.rel, f.status, str(f.frames), f"{f.seconds:.1f}", fps,
                     ", ".join(f.nodes) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i in (0, 1, 5) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    if len(report.files) > max_rows:
        lines.append(f"... and {len(report.files) - max_rows} more (all in --stats)")
    lines.append(f"{report.converted} converted, {report.skipped} skipped, {report.failed} "
                 f"failed; {report.frames} frames in {report.elapsed_s:.1f} s "
                 f"({report.fps:.1f} frames/s on {report.workers} worker(s))"
                 + (f"; {report.retried} task(s) retried" if report.retried else ""))
    return "\n".join(lines)
