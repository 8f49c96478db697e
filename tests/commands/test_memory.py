"""Memory on large inputs: peak resident memory of a 100-megapixel picture and an 8K video.

Each run is a child process whose peak RSS (``VmHWM``) is read when it ends. The
network is the cheap test double: the real network's memory does not depend on the
input's size (its input is at most 256 pixels a side), so what is measured is what the
input costs, plus an interpreter with numpy, OpenCV and PyAV loaded. The real network
adds its own fixed amount (the README gives both). The big inputs are made in
``tmp_path`` by another child and removed at the end of each test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20

_RUN = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path[:0] = [{tests!r}, {root!r}]
import stream.engines.estimator
from support.fakes import cheap_estimator
stream.engines.estimator.create_estimator = lambda *a, **k: cheap_estimator()
import stream.cli as cli
code = cli.main(sys.argv[1:])
# VmHWM, not ru_maxrss: ru_maxrss also counts the parent's memory at fork (pytest's).
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print("peak_kib", peak, file=sys.stderr)
sys.exit(code)
"""


def _peak_mb(argv: list[str], cwd: Path) -> float:
    """Run a depthstream command in a child; return its peak RSS in MiB (Linux)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("peak memory is read from /proc (Linux)")
    code = _RUN.format(tests=str(ROOT / "tests"), root=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return int(re.findall(r"peak_kib (\d+)", done.stderr)[-1]) / 1024


def _make(code: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True, timeout=600,
                   env={"PYTHONPATH": str(ROOT / "tests")})


def _remove(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            for child in path.iterdir():
                child.unlink()
            path.rmdir()
        elif path.exists():
            path.unlink()


@pytest.mark.slow
def test_image_of_100_megapixels_stays_under_1_5_gb(tmp_path):
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    # A smooth picture (a blown-up random 100x100 one): a photo-like JPEG, not noise.
    _make("import cv2, numpy as np\n"
          "tile = np.random.default_rng(0).integers(0, 256, (100, 100, 3), np.uint8)\n"
          f"cv2.imwrite({str(big)!r}, cv2.resize(tile, (10000, 10000)))\n"
          f"cv2.imwrite({str(small)!r}, tile)\n", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    try:
        base = _peak_mb(["image", str(small), "-o", str(out / "small.png"), "--raw",
                         "--side"], tmp_path)
        peak = _peak_mb(["image", str(big), "-o", str(out / "big.png"), "--raw", "--side"],
                        tmp_path)
        assert (out / "big_depth16.npy").stat().st_size == 10000 * 10000 * 4 + 128
    finally:
        _remove(big, small, out)
    print(f"image 100 MP: peak {peak:.0f} MiB, a tiny picture {base:.0f} MiB")
    assert peak <= 1.5 * 1024
    # The decoded picture is 300 MB and OpenCV's decoder briefly holds it twice; a
    # full-size float copy anywhere (400 MB each) would break this.
    assert peak - base <= 800


@pytest.mark.slow
def test_convert_of_an_8k_video_stays_under_2_gb(tmp_path):
    """8K convert, long enough for the decoder and the encoder to hold all they hold."""
    clip = tmp_path / "8k.mp4"
    _make("from support.clips import make_clip\n"
          f"make_clip({str(clip)!r}, 10, (7680, 4320), audio=True)\n", tmp_path)
    out = tmp_path / "out.mp4"
    try:
        peak = _peak_mb(["convert", str(clip), "-o", str(out), "--no-progress"], tmp_path)
        with av.open(str(out)) as written:  # count packets: decoding 8K would cost gigabytes
            packets = [p for p in written.demux(written.streams.video[0]) if p.size]
        assert len(packets) == 10
    finally:
        _remove(clip, out)
    print(f"convert 8K: peak {peak:.0f} MiB")
    # The goal is 2 GB with the real network, whose runtime adds a fixed amount (README,
    # Limits): the test double's run must leave that much room.
    assert peak <= 1.75 * 1024
