"""Depth in metres end to end: a metric model's known depth map through every output.

The network is a test double (:class:`support.fakes.MetricRampBackend`) that gives every
frame the same ramp from 1 m (left) to 5 m (right), so each output can be checked in
its own unit: raw ``.npy`` in metres, 16-bit PNG in millimetres, the bag's ``32FC1`` in
metres, point clouds in metres, the API's ``depth_m``; and near stays warm in colour.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from robotics.test_rosbag import read_bag
from support.clips import make_clip
from support.fakes import cheap_estimator, metric_estimator, ramp_m

from stream.api import DepthStream
from stream.cli import main
from stream.core.errors import ConfigError
from stream.core.settings import RobotSettings
from stream.core.units import DepthKind

W, H = 64, 48


@pytest.fixture
def metric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stream.engines.estimator.create_estimator",
                        lambda *a, **k: metric_estimator())


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "in.mp4", 6, size_wh=(W, H), audio=False)


def test_raw_export_is_metres_in_npy_and_millimetres_in_png(metric: None, clip: Path,
                                                             tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    assert main(["convert", str(clip), "--model", "dav2-metric-indoor", "--raw", str(raw),
                 "--raw-format", "npy", "--no-progress"]) == 0
    expected = np.tile(ramp_m(W), (H, 1))
    npys = sorted(raw.glob("depth_*.npy"))
    assert len(npys) == 6
    for path in npys:
        metres = np.load(path)
        assert metres.dtype == np.float32
        assert np.abs(metres - expected).max() <= 1e-4
        mm = cv2.imread(str(path.with_suffix(".png")), cv2.IMREAD_UNCHANGED)
        assert mm.dtype == np.uint16
        assert np.array_equal(mm, np.round(expected * 1000).astype(np.uint16))
    with open(raw / "timestamps.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "seconds", "min_m", "max_m", "scale"]
    assert float(rows[1][2]) == pytest.approx(1.0, abs=1e-4)
    assert float(rows[1][3]) == pytest.approx(5.0, abs=1e-4)


def test_relative_raw_export_keeps_its_scaled_png_and_header(cheap: None, clip: Path,
                                                             tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    assert main(["convert", str(clip), "--raw", str(raw), "--no-progress"]) == 0
    with open(raw / "timestamps.csv", newline="") as f:
        assert next(csv.reader(f)) == ["index", "seconds", "lo", "hi", "scale"]
    png = cv2.imread(str(sorted(raw.glob("depth_*.png"))[0]), cv2.IMREAD_UNCHANGED)
    assert png.min() == 0 and png.max() == 65535  # the frame's own min..max


def test_near_is_warm_for_metres_too(metric: None, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    assert main(["convert", str(clip), "--model", "dav2-metric-indoor", "-o", str(out),
                 "--codec", "ffv1", "--no-progress"]) == 0
    import av

    with av.open(str(out)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
    brightness = frame.astype(np.float32).mean(axis=(0, 2))
    assert brightness[:8].mean() > brightness[-8:].mean() + 60  # 1 m bright, 5 m dark


def test_fixed_metric_colour_range(metric: None, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    # 1..5 m inside 0..10 m: the far end is not the darkest colour any more.
    assert main(["convert", str(clip), "--model", "dav2-metric-indoor", "-o", str(out),
                 "--codec", "ffv1", "--range-m", "0:10", "--no-progress"]) == 0
    import av

    with av.open(str(out)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="gray")
    assert frame[:, -4:].mean() > 30


def test_range_m_needs_a_metric_model(no_model: None, clip: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(clip), "-o", str(tmp_path / "o.mp4"),
                 "--range-m", "0.5:8"]) == 2
    assert "--range-m sets the colours in metres: it needs a metric model" in \
        capsys.readouterr().err


def test_bag_depth_and_points_are_metres_without_known_distances(metric: None, clip: Path,
                                                                 tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    assert main(["convert", str(clip), "--model", "dav2-metric-indoor", "--rosbag", str(bag),
                 "--pointcloud", "--point-step", "1", "--no-progress"]) == 0
    messages = read_bag(bag)
    assert "metres (REP 118)" in (bag / "metadata.yaml").read_text()  # the bag says so
    image = messages["/depthstream/depth/image_raw"][0][1]
    assert image.encoding == "32FC1"
    depth = np.frombuffer(bytes(image.data), np.float32).reshape(image.height, image.width)
    assert np.abs(depth - np.tile(ramp_m(W), (H, 1))).max() <= 1e-4
    cloud = messages["/depthstream/depth/points"][0][1]
    assert cloud.header.frame_id == "camera"  # metric: no "_relative" frame
    points = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 4)[:, :3]
    z = points[:, 2].reshape(H, W)
    assert np.abs(z - np.tile(ramp_m(W), (H, 1))).max() <= 1e-4


def test_api_frames_carry_metres(clip: Path) -> None:
    with DepthStream(clip, estimator=metric_estimator(), smooth=False,
                     robot=RobotSettings(fov_deg=90.0)) as stream:
        frame = next(iter(stream))
    assert frame.kind is DepthKind.METRIC and frame.metric
    assert frame.depth_m is frame.depth
    assert np.abs(frame.depth_m[0] - ramp_m(W)).max() <= 1e-4
    cloud = frame.points(step=1)
    assert cloud.metric
    # A 90 degree camera: the right edge's x is about its depth (x = z * (u - cx) / fx).
    assert cloud.xyz[0, -1, 0] == pytest.approx(5.0 * (W - 1 - (W - 1) / 2) / (W / 2), rel=1e-3)


def test_relative_frames_refuse_metres_with_a_clear_error(clip: Path) -> None:
    with DepthStream(clip, estimator=cheap_estimator(), smooth=False) as stream:
        frame = next(iter(stream))
    assert frame.kind is DepthKind.RELATIVE
    with pytest.raises(ValueError, match="relative inverse depth, not metres"):
        frame.depth_m


def test_metric_smoothing_keeps_metres(clip: Path) -> None:
    # The same ramp every frame: smoothing must leave metres as metres (no rescaling).
    with DepthStream(clip, estimator=metric_estimator(2.0, 3.0), smooth=0.9) as stream:
        frames = list(stream)
    assert all(f.smoothed for f in frames)
    assert np.abs(frames[-1].depth[0] - ramp_m(W, 2.0, 3.0)).max() <= 1e-3


def test_range_m_is_checked_when_made() -> None:
    from stream.core.settings import StreamSettings

    assert StreamSettings(range_m="0.5:8").render.range_m == (0.5, 8.0)
    for bad in ("8:0.5", "x:1", "1", "-1:2"):
        with pytest.raises(ConfigError, match="--range-m"):
            StreamSettings(range_m=bad)
