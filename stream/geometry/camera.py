"""Camera: the pinhole model of the input camera, and depth frames back-projected to points.

A :class:`PinholeCamera` (focal lengths and principal point in pixels, at the input's
size) comes from a horizontal field of view or from calibrated intrinsics; it gives
ROS's ``CameraInfo`` / Foxglove's ``CameraCalibration`` matrices and back-projects a
frame to a :class:`PointCloud`. The frame's depth is *relative inverse depth* (unknown
scale and shift), so points are in metres only when the camera carries a
:class:`~stream.geometry.metric.MetricScale`, fitted to two or more pixels of known distance by
a :class:`StreamCamera`; otherwise they are in relative units (the nearest part of the
picture at about 1) and say so (:attr:`PointCloud.metric`).

Coordinates follow the optical-frame convention of ROS (REP 103) and OpenCV: x right,
y down, z forward; pixel ``(row, col)`` has its centre at ``u = col``, ``v = row``.

Pure array code: starts no threads, touches no files.

Example:
    >>> camera = PinholeCamera.from_fov(640, 480, fov_deg=60.0)
    >>> round(camera.fx, 1), camera.cx, camera.cy
    (554.3, 319.5, 239.5)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream.core.errors import ConfigError
from stream.core.settings import DEFAULT_FOV_DEG, RobotSettings
from stream.geometry.metric import DEFAULT_MAX_RANGE_M, MetricScale, fit_metric_scale

__all__ = [
    "POINT_STRIDE",
    "RELATIVE_FAR",
    "PinholeCamera",
    "PointCloud",
    "StreamCamera",
    "stream_camera",
]

#: Bytes per point in :meth:`PointCloud.to_bytes`: x, y, z float32, then b, g, r, a uint8.
POINT_STRIDE = 16
#: Relative point clouds put the nearest part of the picture at about 1 and clip at this.
RELATIVE_FAR = 100.0


@dataclass(frozen=True)
class PinholeCamera:
    """An ideal pinhole camera (no distortion) at the input's size.

    Attributes:
        width: picture width in pixels.
        height: picture height in pixels.
        fx: horizontal focal length in pixels.
        fy: vertical focal length in pixels.
        cx: principal point, column (pixel centres at whole numbers).
        cy: principal point, row.
        metric: the fit that turns this frame's relative inverse depth into metres, or
            ``None`` (relative units).

    Raises:
        ConfigError: a focal length that is not positive, or a principal point outside
            the picture.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    metric: MetricScale | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f"camera size must be positive, got {self.width}x{self.height}")
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise ConfigError(f"focal lengths must be positive numbers of pixels, got "
                              f"fx={self.fx}, fy={self.fy}")
        if not (0 <= self.cx < self.width and 0 <= self.cy < self.height):
            raise ConfigError(f"the principal point ({self.cx}, {self.cy}) is outside the "
                              f"{self.width}x{self.height} picture; --intrinsics are pixels "
                              f"at the input's size")

    @classmethod
    def from_fov(cls, width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> PinholeCamera:
        """Square pixels, principal point at the centre, ``fov_deg`` across the width."""
        if not 0 < fov_deg < 180:
            raise ConfigError(f"field of view must be between 0 and 180 degrees, got {fov_deg}")
        fx = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
        return cls(width, height, fx, fx, (width - 1) / 2.0, (height - 1) / 2.0)

    @property
    def size_wh(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.width, self.height

    @property
    def fov_deg(self) -> float:
        """Horizontal field of view in degrees."""
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.fx)))

    @property
    def k(self) -> tuple[float, ...]:
        """The 3x3 intrinsic matrix, row-major (ROS ``CameraInfo.k``)."""
        return (self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0)

    @property
    def r(self) -> tuple[float, ...]:
        """The rectification rotation: identity (a single, undistorted camera)."""
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def p(self) -> tuple[float, ...]:
        """The 3x4 projection matrix, row-major (ROS ``CameraInfo.p``)."""
        return (self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0)

    @property
    def d(self) -> tuple[float, ...]:
        """Distortion coefficients of the ``plumb_bob`` model: all zero."""
        return (0.0, 0.0, 0.0, 0.0, 0.0)

    def with_metric(self, metric: MetricScale | None) -> PinholeCamera:
        """This camera carrying ``metric`` (or none)."""
        return self if metric is self.metric else dataclasses.replace(self, metric=metric)

    def points(self, depth: np.ndarray, image: np.ndarray, step: int = 4,
               near: float = 0.0, metres: bool = False) -> PointCloud:
        """Back-project every ``step``-th pixel of a depth map (rows and columns).

        ``metres``: the map is depth in metres (a metric model): ``z = depth``, and a
        pixel that is not finite or not positive gets no distance (``z = nan``).
        Otherwise the map is relative inverse depth: metres when this camera carries a
        metric fit, else relative units: ``z = near / depth`` (``near``: the display
        range's near end of the frame, or the map's largest value when not given),
        clipped to ``RELATIVE_FAR``.

        Args:
            depth: float32 ``[H, W]`` at the camera's size.
            image: BGR uint8 ``[H, W, 3]``, the colour of each point.
            step: take every ``step``-th row and column.
            near: the depth value that counts as distance 1 (relative clouds only).
            metres: ``depth`` is in metres.

        Raises:
            ValueError: ``step`` is not a whole number >= 1, or the map's size is not
                the camera's.
        """
        if int(step) != step or step < 1:
            raise ValueError(f"step must be a whole number >= 1, got {step}")
        step = int(step)
        size_wh = (depth.shape[1], depth.shape[0])
        if size_wh != self.size_wh:
            raise ValueError(f"frame is {size_wh}, the camera {self.size_wh}")
        colour = image[::step, ::step]
        depth = depth[::step, ::step]
        if metres:
            z = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
        elif self.metric is not None:
            z = self.metric.to_metres(depth, DEFAULT_MAX_RANGE_M)
        else:
            near = float(near) if math.isfinite(near) and near > 0 else 0.0
            if near <= 0:
                finite = depth[np.isfinite(depth)]
                near = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            z = near / np.maximum(np.nan_to_num(depth, nan=0.0), near / RELATIVE_FAR)
            z = z.astype(np.float32)
        rows, cols = depth.shape
        u = (np.arange(cols, dtype=np.float32) * step - np.float32(self.cx)) / np.float32(self.fx)
        v = (np.arange(rows, dtype=np.float32) * step - np.float32(self.cy)) / np.float32(self.fy)
        xyz = np.empty((rows, cols, 3), np.float32)
        np.multiply(z, u[None, :], out=xyz[:, :, 0])
        np.multiply(z, v[:, None], out=xyz[:, :, 1])
        xyz[:, :, 2] = z
        return PointCloud(xyz, colour, metres or self.metric is not None, step)


@dataclass(frozen=True)
class PointCloud:
    """Points of one frame, organised as the sampled pixel grid.

    Attributes:
        xyz: float32 ``[rows, cols, 3]``: x right, y down, z forward (optical frame).
        bgr: uint8 ``[rows, cols, 3]``: the picture's colour at each point.
        metric: the points are in metres; else in relative units (scale unknown).
        step: the pixel step the points were sampled with.
    """

    xyz: np.ndarray
    bgr: np.ndarray
    metric: bool
    step: int

    def __post_init__(self) -> None:
        if self.xyz.dtype != np.float32 or self.xyz.ndim != 3 or self.xyz.shape[2] != 3:
            raise ValueError(f"PointCloud.xyz must be float32 [rows, cols, 3], got "
                             f"{self.xyz.dtype} {self.xyz.shape}")
        if self.bgr.dtype != np.uint8 or self.bgr.shape != self.xyz.shape:
            raise ValueError("PointCloud.bgr must be uint8 and shaped like xyz")

    @property
    def units(self) -> str:
        """``"m"`` or ``"relative"``."""
        return "m" if self.metric else "relative"

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the organised cloud."""
        return self.xyz.shape[0], self.xyz.shape[1]

    def __len__(self) -> int:
        return self.shape[0] * self.shape[1]

    def to_bytes(self) -> bytes:
        """Packed little-endian points, :data:`POINT_STRIDE` bytes each, row by row.

        x, y, z float32 at offsets 0, 4, 8; blue, green, red, alpha (255) uint8 at 12..15,
        which is also PCL's packed ``rgb`` float at offset 12.
        """
        rows, cols = self.shape
        packed = np.empty((rows, cols, POINT_STRIDE), np.uint8)
        packed[:, :, :12] = self.xyz.astype("<f4", copy=False).view(np.uint8).reshape(
            rows, cols, 12)
        packed[:, :, 12:15] = self.bgr
        packed[:, :, 15] = 255
        return packed.tobytes()


class StreamCamera:
    """The camera of one stream, with the metric fit held while the stream's scale holds.

    Given known distances, the fit (:func:`~stream.geometry.metric.fit_metric_scale`) is made on
    the first frame and kept while the smoothed stream stays in one scale; it is made
    again after a scene cut, and on every frame of an unsmoothed stream (each in its own
    scale). A frame whose fit fails (the points contradict its depth) gets no metric and
    the next frame tries again; :attr:`fit_failures` counts them, and the first failure
    adds a line to ``warnings``.

    Args:
        camera: the pinhole model.
        known_distances: ``(row, col, metres)`` of two or more pixels, or none.
        warnings: where to report a failed fit (a source's ``warnings``, which end up in
            the run's statistics).

    Raises:
        ConfigError: a known point is outside the picture, or only one is given.
    """

    def __init__(self, camera: PinholeCamera,
                 known_distances: Sequence[tuple[int, int, float]] = (),
                 warnings: list[str] | None = None) -> None:
        self.camera = camera
        self.warnings = warnings if warnings is not None else []
        self.known = tuple((int(r), int(c), float(m)) for r, c, m in known_distances)
        if len(self.known) == 1:
            raise ConfigError("give two or more known distances")
        for row, col, _ in self.known:
            if not (0 <= row < camera.height and 0 <= col < camera.width):
                raise ConfigError(f"known distance at row {row}, column {col} is outside the "
                                  f"{camera.width}x{camera.height} picture")
        self.fit_failures = 0
        self.last_error: str | None = None
        self._current = camera

    def reset(self) -> None:
        """Forget the fit (a new run)."""
        self._current = self.camera

    def for_frame(self, depth: np.ndarray, *, smoothed: bool,
                  scene_cut: bool = False) -> PinholeCamera:
        """The camera to attach to a frame of ``depth`` (with its metric fit, if any)."""
        if not self.known:
            return self.camera
        if self._current.metric is None or not smoothed or scene_cut:
            try:
                self._current = self.camera.with_metric(fit_metric_scale(depth, self.known))
            except ConfigError as exc:
                self._current = self.camera
                self.fit_failures += 1
                if self.last_error is None:
                    self.warnings.append(f"known distances: no metric fit ({exc}); point "
                                         f"clouds stay in relative units until a fit succeeds")
                self.last_error = str(exc)
        return self._current


def stream_camera(robot: RobotSettings, width: int, height: int,
                  warnings: list[str] | None = None) -> StreamCamera:
    """The :class:`StreamCamera` that ``robot`` describes, for pictures of ``width x height``.

    ``warnings`` receives a line when a metric fit fails (see :class:`StreamCamera`).

    Raises:
        ConfigError: the intrinsics' principal point or a known point is outside the
            picture.
    """
    if robot.intrinsics is not None:
        fx, fy, cx, cy = robot.intrinsics
        camera = PinholeCamera(width, height, fx, fy, cx, cy)
    else:
        camera = PinholeCamera.from_fov(width, height, robot.fov_deg or DEFAULT_FOV_DEG)
    return StreamCamera(camera, robot.known_distances, warnings)
