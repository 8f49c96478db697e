"""stream.geometry.camera: the camera model, metric fits across a stream, point clouds."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from stream.core.errors import ConfigError
from stream.core.records import DepthFrame
from stream.core.settings import RobotSettings, StreamSettings
from stream.geometry.camera import (
    POINT_STRIDE,
    RELATIVE_FAR,
    PinholeCamera,
    PointCloud,
    StreamCamera,
    stream_camera,
)


def _frame(depth: np.ndarray, camera: PinholeCamera | None, image: np.ndarray | None = None,
           hi: float = 1.0) -> DepthFrame:
    height, width = depth.shape
    if image is None:
        rng = np.random.default_rng(1)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return DepthFrame(0, 0.0, image, depth.astype(np.float32), 1.0, lo=0.0, hi=hi,
                      camera=camera)


# --------------------------------------------------------------------------- the model


def test_from_fov_is_centred_with_square_pixels():
    camera = PinholeCamera.from_fov(640, 480, fov_deg=90.0)
    assert camera.fx == pytest.approx(320.0) and camera.fy == camera.fx
    assert (camera.cx, camera.cy) == (319.5, 239.5)
    assert camera.fov_deg == pytest.approx(90.0)
    assert camera.k == (camera.fx, 0.0, 319.5, 0.0, camera.fy, 239.5, 0.0, 0.0, 1.0)
    assert camera.p == (camera.fx, 0.0, 319.5, 0.0, 0.0, camera.fy, 239.5, 0.0, 0.0, 0.0, 1.0,
                        0.0)
    assert camera.d == (0.0,) * 5 and camera.r == (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)


def test_default_field_of_view_is_a_webcams():
    camera = stream_camera(RobotSettings(), 640, 480).camera
    assert camera.fov_deg == pytest.approx(60.0)


def test_intrinsics_are_taken_as_given():
    camera = stream_camera(RobotSettings(intrinsics="500,510,300.5,200"), 640, 480).camera
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (500.0, 510.0, 300.5, 200.0)


@pytest.mark.parametrize("intrinsics, size, message", [
    ("500,500,700,240", (640, 480), "outside"),
    ("500,500,320,480", (640, 480), "outside"),
    ("0,500,320,240", (640, 480), "positive"),
    ("500,-1,320,240", (640, 480), "positive"),
    ("500,500,-3,240", (640, 480), "principal point"),
    ("500,500,320", (640, 480), "4 numbers"),
    ("a,b,c,d", (640, 480), "4 numbers"),
])
def test_bad_intrinsics_are_one_clear_config_error(intrinsics, size, message):
    with pytest.raises(ConfigError, match=message):
        stream_camera(RobotSettings(intrinsics=intrinsics), *size)


@pytest.mark.parametrize("kwargs, message", [
    ({"fov_deg": 0}, "between 0 and 180"),
    ({"fov_deg": 180}, "between 0 and 180"),
    ({"fov_deg": "wide"}, "between 0 and 180"),
    ({"fov_deg": 70, "intrinsics": "500,500,320,240"}, "not both"),
    ({"known_distances": ["10,10,1.5"]}, "two or more"),
    ({"known_distances": ["10,10,0", "1,1,1"]}, "metres positive"),
    ({"known_distances": ["-1,10,2", "1,1,1"]}, "0 or more"),
    ({"known_distances": ["1.5,10,2", "1,1,1"]}, "pixel indices"),
])
def test_robot_settings_check_the_camera_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RobotSettings(**kwargs)


def test_known_points_must_lie_in_the_picture():
    robot = RobotSettings(known_distances=["10,10,1", "47,63,2"])
    stream_camera(robot, 64, 48)  # the last pixel is inside
    with pytest.raises(ConfigError, match="outside the 64x48 picture"):
        stream_camera(RobotSettings(known_distances=["10,10,1", "48,10,2"]), 64, 48)


def test_stream_settings_default_to_no_robotics_output():
    settings = StreamSettings()
    assert settings.robot == RobotSettings() and not settings.robot.outputs
    with pytest.raises(ConfigError, match="RobotSettings"):
        StreamSettings(robot={"fov_deg": 60})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- point clouds


def _plane(camera: PinholeCamera, normal: tuple[float, float, float]) -> np.ndarray:
    """Metric depth z of the plane ``normal . (x, y, z) = 1`` seen by ``camera``."""
    a, b, c = normal
    v, u = np.mgrid[0:camera.height, 0:camera.width].astype(np.float64)
    return 1.0 / (a * (u - camera.cx) / camera.fx + b * (v - camera.cy) / camera.fy + c)


def test_a_plane_at_known_metric_depth_is_recovered_within_two_percent():
    camera = PinholeCamera.from_fov(640, 480, 60.0)
    normal = (0.05, -0.12, 0.4)  # a tilted wall about 2.5 m away
    metres = _plane(camera, normal)
    assert 1.5 < metres.min() and metres.max() < 4.5
    # What the network gives: inverse depth in an unknown scale and shift.
    relative = (7.3 / metres - 0.9).astype(np.float32)
    known = [(40, 50, float(metres[40, 50])), (450, 600, float(metres[450, 600]))]
    stream = StreamCamera(camera, known)
    frame = _frame(relative, stream.for_frame(relative, smoothed=True))
    cloud = frame.points(step=4)
    assert cloud.metric and cloud.units == "m"
    xyz = cloud.xyz.reshape(-1, 3).astype(np.float64)
    on_plane = xyz @ np.array(normal)
    assert np.abs(on_plane - 1.0).max() < 0.02
    z_true = metres[::4, ::4]
    assert np.abs(cloud.xyz[:, :, 2] / z_true - 1.0).max() < 0.02


def test_points_take_every_step_th_pixel_with_its_colour():
    camera = PinholeCamera.from_fov(50, 30, 70.0)
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 2.0, (30, 50)).astype(np.float32)
    frame = _frame(depth, camera, image)
    for step in (1, 3, 4, 7):
        cloud = frame.points(step)
        rows, cols = math.ceil(30 / step), math.ceil(50 / step)
        assert cloud.shape == (rows, cols) and len(cloud) == rows * cols
        assert np.array_equal(cloud.bgr, image[::step, ::step])
        # x, y follow the pixel's ray through the principal point
        r, c = rows - 1, cols - 1
        x, y, z = cloud.xyz[r, c]
        assert x / z == pytest.approx((c * step - camera.cx) / camera.fx, rel=1e-5)
        assert y / z == pytest.approx((r * step - camera.cy) / camera.fy, rel=1e-5)


def test_packed_points_are_xyz_floats_then_bgra_bytes():
    xyz = np.array([[[1.5, -2.0, 3.25], [0.0, 1.0, 2.0]]], np.float32)
    bgr = np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8)
    data = PointCloud(xyz, bgr, True, 4).to_bytes()
    assert len(data) == 2 * POINT_STRIDE
    first = data[:POINT_STRIDE]
    assert np.frombuffer(first[:12], "<f4").tolist() == [1.5, -2.0, 3.25]
    assert list(first[12:]) == [10, 20, 30, 255]


def test_without_known_distances_the_points_are_relative_and_say_so():
    camera = PinholeCamera.from_fov(64, 48)
    depth = np.linspace(0.0, 2.0, 64 * 48, dtype=np.float32).reshape(48, 64)
    stream = StreamCamera(camera)
    frame = _frame(depth, stream.for_frame(depth, smoothed=True), hi=2.0)
    cloud = frame.points(1)
    assert not cloud.metric and cloud.units == "relative"
    z = cloud.xyz[:, :, 2]
    assert z.min() == pytest.approx(1.0) and z.max() == pytest.approx(RELATIVE_FAR)
    assert z[0, 0] > z[-1, -1]  # larger inverse depth = nearer


def test_frames_without_a_camera_or_with_another_size_say_so():
    depth = np.ones((48, 64), np.float32)
    with pytest.raises(ValueError, match="no camera model"):
        _frame(depth, None).points()
    with pytest.raises(ValueError, match="camera"):
        _frame(depth, PinholeCamera.from_fov(32, 24))
    with pytest.raises(ValueError, match="step"):
        _frame(depth, PinholeCamera.from_fov(64, 48)).points(0)


def test_points_of_a_vga_frame_take_a_few_milliseconds():
    camera = PinholeCamera.from_fov(640, 480)
    metres = _plane(camera, (0.05, -0.12, 0.4))
    relative = (7.3 / metres - 0.9).astype(np.float32)
    stream = StreamCamera(camera, [(40, 50, float(metres[40, 50])),
                                   (450, 600, float(metres[450, 600]))])
    frame = _frame(relative, stream.for_frame(relative, smoothed=True))
    for _ in range(3):
        frame.points(4).to_bytes()
    runs = 50
    start = time.perf_counter()
    for _ in range(runs):
        frame.points(4).to_bytes()
    ms = (time.perf_counter() - start) * 1000 / runs
    print(f"points(step=4) + packing, 640x480: {ms:.2f} ms")
    assert ms < 20.0  # a few ms on a laptop; generous for a busy CI machine


# --------------------------------------------------------------------------- held fits


def _two_point_stream(shape=(48, 64)) -> tuple[StreamCamera, list]:
    camera = PinholeCamera.from_fov(shape[1], shape[0])
    known = [(5, 5, 1.0), (40, 60, 4.0)]
    return StreamCamera(camera, known), known


def _ramp(scale: float, shift: float, shape=(48, 64)) -> np.ndarray:
    base = np.linspace(1.0, 0.25, shape[0] * shape[1]).reshape(shape)
    return (scale * base + shift).astype(np.float32)


def test_a_smoothed_stream_keeps_its_fit_until_a_scene_cut():
    stream, known = _two_point_stream()
    first = stream.for_frame(_ramp(2.0, 0.1), smoothed=True)
    assert first.metric is not None
    # Same scale by the smoother's promise: the fit is held, not redone.
    again = stream.for_frame(_ramp(5.0, 0.3), smoothed=True)
    assert again.metric is first.metric
    after_cut = stream.for_frame(_ramp(5.0, 0.3), smoothed=True, scene_cut=True)
    assert after_cut.metric != first.metric
    stream.reset()
    assert stream.for_frame(_ramp(2.0, 0.1), smoothed=True).metric == first.metric


def test_an_unsmoothed_stream_is_fitted_on_every_frame():
    stream, known = _two_point_stream()
    fits = []
    for depth in (_ramp(2.0, 0.1), _ramp(5.0, 0.3)):
        fit = stream.for_frame(depth, smoothed=False).metric
        for row, col, metres in known:
            assert fit.to_metres(depth)[row, col] == pytest.approx(metres, rel=1e-4)
        fits.append(fit)
    assert fits[0] != fits[1]


def test_a_failed_fit_leaves_the_frame_relative_and_warns_once():
    warnings: list[str] = []
    camera = PinholeCamera.from_fov(64, 48)
    stream = StreamCamera(camera, [(5, 5, 1.0), (40, 60, 4.0)], warnings=warnings)
    flat = np.ones((48, 64), np.float32)  # both points at the same relative depth
    assert stream.for_frame(flat, smoothed=True).metric is None
    assert stream.for_frame(flat, smoothed=True).metric is None
    assert stream.fit_failures == 2 and len(warnings) == 1
    assert "relative units" in warnings[0]
    assert stream.for_frame(_ramp(2.0, 0.1), smoothed=True).metric is not None
