"""ROS 2 bag sink: depth, colour and camera info per frame, into a rosbag2 folder (``--rosbag``).

Written with the pure-Python ``rosbags`` library (no ROS installation), as rosbag2
version 8 in MCAP (default) or SQLite 3 storage, which ``ros2 bag info`` / ``ros2 bag
play`` read. Per frame, under the topic prefix (default ``/depthstream``):

* ``<prefix>/depth/image_raw``: ``sensor_msgs/msg/Image``, ``32FC1``, the frame's depth:
  metres for a metric model (REP 118), else relative inverse depth (larger = nearer,
  unknown scale and shift: *not metres*);
* ``<prefix>/depth/camera_info``: ``sensor_msgs/msg/CameraInfo`` (pinhole, ``plumb_bob``
  with zero distortion) of the frame's camera model;
* ``<prefix>/color/image_raw/compressed``: ``sensor_msgs/msg/CompressedImage``, the
  input picture as JPEG;
* with ``colour``: ``<prefix>/depth/colormap``, ``sensor_msgs/msg/Image`` ``bgr8``;
* with ``pointcloud``: ``<prefix>/depth/points``, ``sensor_msgs/msg/PointCloud2`` (x, y, z
  float32 and packed ``rgb``), in metres for a metric model or when known distances were
  given, else in
  relative units with ``frame_id`` ``<frame_id>_relative``.

With ``depth_transport`` ``compressedDepth`` the depth goes instead to
``<prefix>/depth/image_raw/compressedDepth`` as ``sensor_msgs/msg/CompressedImage`` in
image_transport's compressedDepth format (what ``compressed_depth_image_transport``,
RViz and ``ros2 bag play`` with image_transport decode): a 12-byte header (format int32,
0; quantization parameters a, b float32) then a 16-bit PNG. Depth in metres is stored as
``16UC1`` millimetres (0: unknown or beyond 65.535 m); relative inverse depth as the
plugin's ``32FC1`` quantization, ``q = a / v + b`` decoded as ``v = a / (q - b)``, with
a and b fitted to each frame's range (:func:`compressed_depth`, :func:`decode_compressed_depth`).
With ``compression`` ``zstd`` an MCAP bag has zstd chunks, an SQLite 3 bag zstd messages.

The bag is written in a temporary folder next to the target and renamed into place when
the sink is closed, which the pipeline does also after Ctrl+C or SIGTERM: a bag folder is
whole or absent. Touches files; starts no threads.

Example:
    >>> from rosbags.rosbag2 import Reader  # doctest: +SKIP
    >>> with Reader("run.bag") as bag:  # doctest: +SKIP
    ...     print([c.topic for c in bag.connections])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.core.errors import SinkError
from stream.core.files import part_name, remove_stale_parts
from stream.core.records import DepthFrame, DepthKind
from stream.core.settings import RobotSettings, RosbagStorage, StreamSettings, parse_enum
from stream.depth.colormap import colorize
from stream.geometry.camera import POINT_STRIDE, PinholeCamera
from stream.robotics.stamps import Stamper, split_ns
from stream.sinks.base import Sink, SinkContext

__all__ = ["BAG_VERSION", "DEPTH_UNITS", "METRIC_DEPTH_UNITS", "RosbagSink", "depth_units",
           "topic_names", "compressed_depth", "decode_compressed_depth"]

#: rosbag2 metadata version written (the format of ROS 2 Iron's rosbag2).
BAG_VERSION = 8
_JPEG_QUALITY = 85
#: What the ``32FC1`` depth holds, recorded in the bag's ``custom_data``.
DEPTH_UNITS = "relative inverse depth: larger = nearer, unknown scale and shift, not metres"
#: What a metric model's depth images hold (REP 118), recorded the same way.
METRIC_DEPTH_UNITS = "metres (REP 118): larger = farther, 0 or NaN = no depth"


def depth_units(kind: DepthKind) -> str:
    """What the depth images hold, in words, for a stream whose depth is ``kind``."""
    return METRIC_DEPTH_UNITS if kind is DepthKind.METRIC else DEPTH_UNITS


Compression = RobotSettings.Compression
DepthTransport = RobotSettings.DepthTransport
# compressedDepth: the plugin's ConfigHeader (format, depthParam[2]) as a little-endian
# machine writes it; format 0 is its INV_DEPTH, the only one it has.
_DEPTH_HEADER = struct.Struct("<iff")
_INV_DEPTH = 0
_Q_MAX = 65535
# 32FC1 compressedDepth keeps a frame's values from its largest down to 1/_Q_RATIO of it
# (smaller positive values are stored as that floor): the nearest values then are within
# 0.8 % (half a step), the others closer.
_Q_RATIO = 1000.0
# zlib level of the PNGs: the plugin's 9 takes over ten times as long as 3 for 6 % less.
_PNG_LEVEL = 3


def topic_names(prefix: str = "/depthstream") -> dict[str, str]:
    """Topic of each kind of message under ``prefix`` (shared with the Foxglove channels)."""
    return {
        "depth": f"{prefix}/depth/image_raw",
        "compressed_depth": f"{prefix}/depth/image_raw/compressedDepth",
        "info": f"{prefix}/depth/camera_info",
        "jpeg": f"{prefix}/color/image_raw/compressed",
        "colour": f"{prefix}/depth/colormap",
        "points": f"{prefix}/depth/points",
    }


def _quantization(depth: np.ndarray) -> tuple[float, float]:
    """The plugin's ``(a, b)`` (float32) for ``depth``: the largest value as 1, the floor 65535."""
    known = depth[np.isfinite(depth) & (depth > 0)]
    if not known.size:
        return 1.0, 0.0
    hi = float(known.max())
    lo = max(float(known.min()), hi / _Q_RATIO)
    a = hi if lo >= hi else (_Q_MAX - 1) / (1 / lo - 1 / hi)
    a = float(np.float32(a))
    return a, float(np.float32(1 - a / hi))


def compressed_depth(depth: np.ndarray, metric: bool) -> tuple[str, np.ndarray]:
    """``(format, data)`` of a compressedDepth ``CompressedImage`` holding ``depth``.

    ``metric``: ``depth`` is in metres, stored as ``16UC1`` millimetres; else it is
    relative inverse depth, stored with the plugin's ``32FC1`` quantization. Unknown,
    non-positive (and, in millimetres, beyond 65535) values are stored as 0.

    Raises:
        SinkError: PNG encoding failed.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if metric:
            header = _DEPTH_HEADER.pack(_INV_DEPTH, 0.0, 0.0)
            mm = np.rint(depth.astype(np.float64) * 1000)
            image = np.where(np.isfinite(mm) & (mm >= 1) & (mm <= _Q_MAX), mm, 0)
        else:
            a, b = _quantization(depth)
            header = _DEPTH_HEADER.pack(_INV_DEPTH, a, b)
            q = np.clip(np.rint(a / depth.astype(np.float64) + b), 1, _Q_MAX)
            image = np.where(np.isfinite(depth) & (depth > 0), q, 0)
    ok, png = cv2.imencode(".png", image.astype(np.uint16),
                           [cv2.IMWRITE_PNG_COMPRESSION, _PNG_LEVEL])
    if not ok:
        raise SinkError("cannot encode a depth frame as PNG")
    fmt = f"{'16UC1' if metric else '32FC1'}; compressedDepth png"
    return fmt, np.concatenate([np.frombuffer(header, np.uint8), png.reshape(-1)])


def decode_compressed_depth(fmt: str, data: bytes | np.ndarray) -> np.ndarray:
    """The depth image of a compressedDepth message, as the plugin decodes it.

    Returns:
        ``16UC1``: uint16 millimetres (0: unknown); ``32FC1``: float32 (NaN: unknown).

    Raises:
        ValueError: not a compressedDepth PNG message.
    """
    raw = np.frombuffer(bytes(data), np.uint8)
    encoding, _, transport = fmt.partition(";")
    if "compressedDepth" not in transport or "rvl" in transport or raw.size <= 12:
        raise ValueError(f"not a compressedDepth PNG message (format {fmt!r})")
    _, a, b = _DEPTH_HEADER.unpack_from(raw)
    image = cv2.imdecode(raw[_DEPTH_HEADER.size:], cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint16:
        raise ValueError("compressedDepth message without a 16-bit PNG")
    if encoding.strip() != "32FC1":
        return image
    with np.errstate(divide="ignore"):
        depth = np.float32(a) / (image.astype(np.float32) - np.float32(b))
    depth[image == 0] = np.nan
    return depth


class RosbagSink(Sink):
    """Write each frame's depth, colour and camera info to a ROS 2 bag.

    Args:
        folder: the bag (a folder that must not exist, unless ``overwrite`` and it holds
            a bag); its parent must exist.
        storage: ``mcap`` or ``sqlite3``.
        frame_id: ``header.frame_id`` of the messages.
        topic_prefix: namespace of the topics.
        colour: add the colourised depth as ``bgr8``.
        pointcloud: add a ``PointCloud2`` per frame, every ``point_step``-th pixel.
        point_step: pixel step of the point clouds.
        cmap: colormap of the colourised depth.
        invert: near dark in the colourised depth.
        stamper: header stamps (default: the video's pts, the capture clock live).
        overwrite: replace an existing bag.
        compression: ``none`` or ``zstd`` (MCAP: zstd chunks; SQLite 3: zstd messages).
        depth_transport: ``raw`` (``32FC1`` images) or ``compressedDepth`` (PNG).

    Raises:
        SinkError: the parent folder is missing, or ``folder`` exists (and is not a bag
            to overwrite).
    """

    def __init__(self, folder: str | os.PathLike, *,
                 storage: RosbagStorage | str = RosbagStorage.MCAP,
                 frame_id: str = "camera", topic_prefix: str = "/depthstream",
                 colour: bool = False, pointcloud: bool = False, point_step: int = 4,
                 cmap: str = "inferno", invert: bool = False,
                 stamper: Stamper | None = None, overwrite: bool = False,
                 compression: Compression | str = Compression.NONE,
                 depth_transport: DepthTransport | str = DepthTransport.RAW) -> None:
        self.folder = Path(folder)
        self.storage = parse_enum(RosbagStorage, storage, "rosbag storage")
        self.compression = parse_enum(Compression, compression, "rosbag compression")
        self.depth_transport = parse_enum(DepthTransport, depth_transport, "rosbag depth")
        if not self.folder.parent.is_dir():
            raise SinkError(f"output folder does not exist: {self.folder.parent}")
        if self.folder.exists() or self.folder.is_symlink():
            if not overwrite:
                raise SinkError(f"output exists: {self.folder} (use --overwrite to replace it)")
            if not (self.folder.is_dir() and (self.folder / "metadata.yaml").is_file()):
                raise SinkError(f"{self.folder} exists and is not a ROS 2 bag; not replacing it")
        self.frame_id, self.colour, self.pointcloud = frame_id, colour, pointcloud
        self.point_step, self.cmap, self.invert = point_step, cmap, invert
        self.topics = topic_names(topic_prefix)
        self.stamper = stamper or Stamper()
        self.frames_written = 0
        self._writer: Any = None
        self._temp: Path | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: StreamSettings, stamper: Stamper) -> RosbagSink:
        """The sink ``settings.robot`` asks for (``rosbag_dir`` must be set)."""
        robot = settings.robot
        assert robot is not None and robot.rosbag_dir is not None
        return cls(robot.rosbag_dir, storage=robot.rosbag_storage, colour=robot.rosbag_colour,
                   cmap=settings.cmap, invert=settings.invert, stamper=stamper,
                   overwrite=settings.overwrite, compression=robot.rosbag_compression,
                   depth_transport=robot.rosbag_depth, **robot.topic_options)

    # -- lifecycle -------------------------------------------------------------------

    def open(self, context: SinkContext) -> None:  # noqa: D102
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.stamper.open(context.info)
        self._store = get_typestore(Stores.ROS2_HUMBLE)
        remove_stale_parts(self.folder.parent)
        self._temp = part_name(self.folder)
        try:
            self._temp.mkdir()
            plugin = (StoragePlugin.MCAP if self.storage is RosbagStorage.MCAP
                      else StoragePlugin.SQLITE3)
            self._writer = Writer(self._temp / self.folder.name, version=BAG_VERSION,
                                  storage_plugin=plugin)
            if self.compression is Compression.ZSTD:
                mode = (CompressionMode.STORAGE if plugin is StoragePlugin.MCAP
                        else CompressionMode.MESSAGE)
                self._writer.set_compression(mode, CompressionFormat.ZSTD)
            self._writer.open()
            self._writer.set_custom_data("depthstream.depth_units", depth_units(context.kind))
        except OSError as exc:
            self._discard()
            raise SinkError(f"cannot write {self.folder}: {exc.strerror or exc}") from exc
        packed = self.depth_transport is DepthTransport.COMPRESSED_DEPTH
        kinds = {"compressed_depth" if packed else "depth":
                 "CompressedImage" if packed else "Image",
                 "info": "CameraInfo", "jpeg": "CompressedImage"}
        if self.colour:
            kinds["colour"] = "Image"
        if self.pointcloud:
            kinds["points"] = "PointCloud2"
        self._connections = {
            kind: self._writer.add_connection(self.topics[kind], f"sensor_msgs/msg/{name}",
                                              typestore=self._store)
            for kind, name in kinds.items()
        }

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        stamp = self.stamper.stamp_ns(frame)
        types = self._store.types
        sec, nanosec = split_ns(stamp)
        header = types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
            frame_id=self.frame_id)
        height, width = frame.depth.shape
        messages: dict[str, Any] = {
            **self._depth(header, frame),
            "info": self._camera_info(header, frame.camera),
            "jpeg": types["sensor_msgs/msg/CompressedImage"](
                header=header, format="jpeg", data=_jpeg(frame.image)),
        }
        if self.colour:
            bgr = colorize(frame.depth, frame.lo, frame.hi, cmap=self.cmap, invert=self.invert)
            messages["colour"] = self._image(header, bgr.reshape(-1), width, height, "bgr8", 3)
        if self.pointcloud:
            messages["points"] = self._cloud(header, frame)
        for kind, message in messages.items():
            data = self._store.serialize_cdr(message, message.__msgtype__)
            self._writer.write(self._connections[kind], stamp, data)
        self.frames_written += 1

    def close(self) -> None:  # noqa: D102
        if self._closed or self._writer is None:
            return
        self._closed = True
        try:
            self._writer.close()
        except Exception as exc:  # noqa: BLE001 - any failure leaves no half bag
            self._discard()
            raise SinkError(f"cannot finish the bag {self.folder}: {exc}") from exc
        if not self.frames_written:
            self._discard()
            return
        self._commit()

    def abort(self, error: BaseException | None = None) -> str | None:
        """The run failed: end without putting a bag at the path (safe to call twice)."""
        if self._closed:
            return None
        self._closed = True
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the bag is dropped whatever it says
                self._writer.close()
        self._discard()
        return None

    # -- messages ----------------------------------------------------------------------

    def _depth(self, header: Any, frame: DepthFrame) -> dict[str, Any]:
        if self.depth_transport is DepthTransport.COMPRESSED_DEPTH:
            fmt, data = compressed_depth(frame.depth, frame.kind is DepthKind.METRIC)
            return {"compressed_depth": self._store.types["sensor_msgs/msg/CompressedImage"](
                header=header, format=fmt, data=data)}
        height, width = frame.depth.shape
        depth = np.ascontiguousarray(frame.depth, dtype="<f4").view(np.uint8).reshape(-1)
        return {"depth": self._image(header, depth, width, height, "32FC1", 4)}

    def _image(self, header: Any, data: np.ndarray, width: int, height: int, encoding: str,
               pixel_bytes: int) -> Any:
        return self._store.types["sensor_msgs/msg/Image"](
            header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
            step=width * pixel_bytes, data=data)

    def _camera_info(self, header: Any, camera: PinholeCamera | None) -> Any:
        types = self._store.types
        if camera is None:
            raise SinkError("the rosbag sink needs frames with a camera model")
        return types["sensor_msgs/msg/CameraInfo"](
            header=header, height=camera.height, width=camera.width,
            distortion_model="plumb_bob", d=np.array(camera.d), k=np.array(camera.k),
            r=np.array(camera.r), p=np.array(camera.p), binning_x=0, binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def _cloud(self, header: Any, frame: DepthFrame) -> Any:
        types = self._store.types
        cloud = frame.points(self.point_step)
        field = types["sensor_msgs/msg/PointField"]
        fields = [field(name=n, offset=o, datatype=7, count=1)  # 7: FLOAT32
                  for n, o in (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))]
        if not cloud.metric:
            header = types["std_msgs/msg/Header"](stamp=header.stamp,
                                                  frame_id=f"{self.frame_id}_relative")
        rows, cols = cloud.shape
        return types["sensor_msgs/msg/PointCloud2"](
            header=header, height=rows, width=cols, fields=fields, is_bigendian=False,
            point_step=POINT_STRIDE, row_step=POINT_STRIDE * cols,
            data=np.frombuffer(cloud.to_bytes(), np.uint8), is_dense=True)

    # -- the folder ----------------------------------------------------------------------

    def _commit(self) -> None:
        assert self._temp is not None
        bag = self._temp / self.folder.name
        old = None
        try:
            if self.folder.exists():  # overwrite was checked: it is a bag
                old = part_name(self.folder)
                os.replace(self.folder, old)
            os.replace(bag, self.folder)
        except OSError as exc:
            if old is not None and not self.folder.exists():
                os.replace(old, self.folder)
            self._discard()
            raise SinkError(f"cannot write {self.folder}: {exc.strerror or exc}") from exc
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._discard()

    def _discard(self) -> None:
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None


def _jpeg(image: np.ndarray) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise SinkError("cannot encode a frame as JPEG")
    return data.reshape(-1)
