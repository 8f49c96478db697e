"""Settings: what a run is configured with, each value validated once, when it is made.

Starts no threads, touches no files, imports nothing heavy: a bad argument fails here,
before torch, timm, OpenVINO or PyAV are imported. The enums are the single list of
choices (the CLI's ``choices=`` come from them). Records, bottom-up:

* :class:`RenderSettings`: layout, overlay alpha, colormap, invert;
* :class:`ModelSettings`: weights, backend, device, precision;
* :class:`ExportSettings`: the raw depth folder, its format, unsmoothed or not;
* :class:`RunLimits`: duration, queue size, the ``--stats`` file;
* :class:`EncoderSettings`: the output videos' codec, quality (CRF) and speed preset;
* :class:`RobotSettings`: camera model, known distances, ROS 2 bag, Foxglove, MCAP;
* :class:`StreamSettings`: everything a conversion or live run is asked to do, with the
  records above as properties (its keyword constructor is the public API).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from stream.core.errors import ConfigError

__all__ = [
    "BackendName",
    "Device",
    "Precision",
    "Layout",
    "RawFormat",
    "VideoCodec",
    "RosbagStorage",
    "StampOrigin",
    "COLORMAP_NAMES",
    "DEFAULT_FOV_DEG",
    "DEFAULT_SMOOTH",
    "choices",
    "parse_enum",
    "smooth_strength",
    "parse_host_port",
    "is_loopback",
    "RenderSettings",
    "ModelSettings",
    "ExportSettings",
    "RunLimits",
    "PRESET_NAMES",
    "CRF_RANGES",
    "CONTAINER_CODECS",
    "CODEC_DEFAULTS",
    "EncoderSettings",
    "RobotSettings",
    "ZmqSettings",
    "StreamSettings",
]

E = TypeVar("E", bound=Enum)

DEFAULT_SMOOTH = 0.8
"""Default temporal smoothing strength (chosen with ``benchmarks/temporal.py``)."""

DEFAULT_FOV_DEG = 60.0
"""Default horizontal field of view of the pinhole camera model (a typical webcam's)."""

COLORMAP_NAMES = ("inferno", "magma", "plasma", "viridis", "turbo", "jet", "bone", "gray")
"""Colormaps by name (near = bright in each); :mod:`stream.depth.colormap` maps them to tables."""


class BackendName(Enum):
    """Inference engine: OpenVINO when installed (CPU), else torch; or one of them."""

    AUTO = "auto"
    OPENVINO = "openvino"
    TORCH = "torch"


class Device(Enum):
    """Where torch runs the network."""

    CPU = "cpu"
    CUDA = "cuda"


class Precision(Enum):
    """Network precision: ``auto`` picks int8 only where its self-check passed."""

    AUTO = "auto"
    FP32 = "fp32"
    INT8 = "int8"


class Layout(Enum):
    """What a window or video shows: the depth, picture and depth side by side, or a blend."""

    DEPTH = "depth"
    SIDE = "side"
    OVERLAY = "overlay"


class RawFormat(Enum):
    """Raw depth files per frame: 16-bit PNG, or 16-bit PNG plus float32 ``.npy``."""

    PNG = "png"
    NPY = "npy"


class VideoCodec(Enum):
    """Codec of an output video: H.264, H.265 (HEVC), VP9, or lossless FFV1 (in ``.mkv``)."""

    H264 = "h264"
    HEVC = "hevc"
    VP9 = "vp9"
    FFV1 = "ffv1"


PRESET_NAMES = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")
"""Encoder speed presets, fastest (largest file) first: x264's names, for every lossy codec."""

CRF_RANGES = {VideoCodec.H264: (0, 51), VideoCodec.HEVC: (0, 51), VideoCodec.VP9: (0, 63)}
"""``--crf`` range per lossy codec (lower: better and larger); FFV1 is lossless, no CRF."""

CONTAINER_CODECS = {
    ".mp4": (VideoCodec.H264, VideoCodec.HEVC, VideoCodec.VP9),
    ".mkv": (VideoCodec.H264, VideoCodec.HEVC, VideoCodec.VP9, VideoCodec.FFV1),
    ".webm": (VideoCodec.VP9,),
}
"""The codecs each output container holds; the first is its default."""

CODEC_DEFAULTS: dict[VideoCodec, tuple[int | None, str | None]] = {
    # (crf, preset), picked with benchmarks/encoder.py (table in the README): the knee of
    # size against encoding time on the sample clip.
    VideoCodec.H264: (23, "superfast"),
    VideoCodec.HEVC: (28, "ultrafast"),
    VideoCodec.VP9: (34, "ultrafast"),
    VideoCodec.FFV1: (None, None),
}
"""Default ``(crf, preset)`` per codec."""


class RosbagStorage(Enum):
    """Storage of a ROS 2 bag: MCAP (rosbag2's default since Iron) or SQLite 3."""

    MCAP = "mcap"
    SQLITE3 = "sqlite3"


class StampOrigin(Enum):
    """Header stamps of a file's frames: seconds from the video's start, or wall-clock time.

    ``UNIX`` adds the file's recorded start time (its ``creation_time``) when it has one.
    Live sources always stamp with the capture clock (wall-clock time).
    """

    VIDEO = "video"
    UNIX = "unix"


def choices(kind: type[Enum]) -> tuple[str, ...]:
    """The values of an enum, for ``argparse`` ``choices=``."""
    return tuple(str(m.value) for m in kind)


def parse_enum(kind: type[E], value: Any, what: str) -> E:
    """``kind(value)``, or a :class:`ConfigError` that lists the choices."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"unknown {what} {value!r}; choose one of "
                          f"{', '.join(choices(kind))}") from None


def smooth_strength(smooth: bool | float | None = None, off: bool = False) -> float:
    """The smoothing strength from the user's words.

    Args:
        smooth: ``True``/``None`` (default strength), ``False`` (off), or a strength 0..1.
        off: ``--no-smooth`` was given (contradicts a non-zero ``smooth``).

    Raises:
        ConfigError: not a number, out of 0..1, or contradicting ``off``.
    """
    if off:
        if smooth not in (None, False, 0):
            raise ConfigError("--no-smooth and --smooth contradict each other")
        return 0.0
    if smooth is None or smooth is True:
        return DEFAULT_SMOOTH
    if smooth is False:
        return 0.0
    try:
        value = float(smooth)
    except (TypeError, ValueError):
        raise ConfigError(f"smooth must be True, False or a strength, got {smooth!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"smooth must be from 0 (off) to 1, got {smooth}")
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


_ROS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_host_port(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"[HOST:]PORT"`` -> ``(host, port)``; IPv6 hosts in brackets (``[::1]:8765``).

    Raises:
        ConfigError: no port, a port outside 0..65535 (0: any free port), or an empty host.
    """
    text = str(text).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host = default_host
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"expected [HOST:]PORT with a port from 0 to 65535, got {text!r}")
    return host, int(port)


def _numbers(value: Any, count: int, what: str) -> tuple[float, ...]:
    """``"a,b,c"`` or a sequence -> ``count`` finite floats."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        numbers = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"{what}: expected {count} numbers separated by commas, got {value!r}")
    return numbers


def _known_distance(value: Any) -> tuple[int, int, float]:
    row, col, metres = _numbers(value, 3, "--known-distance ROW,COL,METRES")
    if row != int(row) or col != int(col) or row < 0 or col < 0 or metres <= 0:
        raise ConfigError(f"--known-distance ROW,COL,METRES: row and column are pixel "
                          f"indices (0 or more), metres positive; got {value!r}")
    return int(row), int(col), metres


@dataclass(frozen=True)
class RobotSettings:
    """The camera model and the robotics outputs (ROS 2 bag, Foxglove live view, MCAP).

    Strings are accepted where the command line gives them (``intrinsics="500,500,320,
    240"``, ``known_distances=["240,320,1.5", ...]``, ``foxglove="0.0.0.0:8765"``). What
    needs the picture's size (principal point inside the picture, known points inside
    the frame) is checked when the source is open, by :mod:`stream.geometry.camera`.

    Attributes:
        fov_deg: horizontal field of view of the pinhole model (default
            :data:`DEFAULT_FOV_DEG`); not together with ``intrinsics``.
        intrinsics: ``(fx, fy, cx, cy)`` in pixels at the input's size.
        known_distances: ``(row, col, metres)`` of two or more pixels whose distance
            is known: point clouds are then in metres (else in relative units).
        rosbag_dir: write a ROS 2 bag (a folder) here.
        rosbag_storage: the bag's storage plugin.
        rosbag_colour: also put the colourised depth in the bag (``bgr8``).
        rosbag_compression: compress the bag (:class:`RobotSettings.Compression`).
        rosbag_depth: how the bag holds depth (:class:`RobotSettings.DepthTransport`).
        stamp_origin: header stamps of a file's frames (live sources: capture clock).
        frame_id: ``header.frame_id`` of every message (an optical frame: x right, y
            down, z forward).
        topic_prefix: namespace of every topic and channel.
        foxglove: ``[HOST:]PORT`` of a Foxglove WebSocket server (default host
            127.0.0.1; any other host is reachable from the network, unauthenticated).
        mcap_path: record the Foxglove channels to this MCAP file.
        pointcloud: also publish a point cloud per frame.
        point_step: point clouds take every ``point_step``-th pixel in each direction.
    """

    class Compression(Enum):
        """Compression of a ROS 2 bag (``--rosbag-compression``).

        ``zstd``: MCAP's own zstd chunks (what ``ros2 bag record --storage-preset-profile
        zstd_fast`` writes); SQLite 3 has none, so there each message is compressed
        (rosbag2's ``--compression-mode message --compression-format zstd``).
        """

        NONE = "none"
        ZSTD = "zstd"

    class DepthTransport(Enum):
        """How a bag holds depth (``--rosbag-depth``).

        ``raw``: ``sensor_msgs/msg/Image`` ``32FC1`` on ``.../depth/image_raw``.
        ``compressedDepth``: PNG in image_transport's compressedDepth format on
        ``.../depth/image_raw/compressedDepth``.
        """

        RAW = "raw"
        COMPRESSED_DEPTH = "compressedDepth"

    fov_deg: float | None = None
    intrinsics: tuple[float, float, float, float] | str | None = None
    known_distances: Sequence[tuple[int, int, float] | str] = ()
    rosbag_dir: Path | None = None
    rosbag_storage: RosbagStorage = RosbagStorage.MCAP
    rosbag_colour: bool = False
    rosbag_compression: RobotSettings.Compression = Compression.NONE
    rosbag_depth: RobotSettings.DepthTransport = DepthTransport.RAW
    stamp_origin: StampOrigin = StampOrigin.VIDEO
    frame_id: str = "camera"
    topic_prefix: str = "/depthstream"
    foxglove: str | None = None
    mcap_path: Path | None = None
    pointcloud: bool = False
    point_step: int = 4

    def __post_init__(self) -> None:
        self._check_camera()
        _set(self, "rosbag_storage",
             parse_enum(RosbagStorage, self.rosbag_storage, "rosbag storage"))
        _set(self, "rosbag_compression",
             parse_enum(self.Compression, self.rosbag_compression, "rosbag compression"))
        _set(self, "rosbag_depth",
             parse_enum(self.DepthTransport, self.rosbag_depth, "rosbag depth"))
        _set(self, "stamp_origin", parse_enum(StampOrigin, self.stamp_origin, "stamp origin"))
        for name in ("rosbag_dir", "mcap_path"):
            if getattr(self, name) is not None:
                _set(self, name, Path(getattr(self, name)))
        if self.foxglove is not None:
            _set(self, "foxglove", "{}:{}".format(*parse_host_port(self.foxglove)))
        if not (isinstance(self.frame_id, str) and re.fullmatch(r"[A-Za-z_][\w/.-]*",
                                                                 self.frame_id)):
            raise ConfigError(f"--frame-id must start with a letter or _ and hold letters, "
                              f"digits, _ / . -; got {self.frame_id!r}")
        parts = self.topic_prefix.split("/") if isinstance(self.topic_prefix, str) else [""]
        if parts[0] != "" or not all(_ROS_NAME.fullmatch(p) for p in parts[1:]):
            raise ConfigError(f"--topic-prefix must be a ROS name like /depthstream or "
                              f"/robot/front, got {self.topic_prefix!r}")
        if int(self.point_step) != self.point_step or self.point_step < 1:
            raise ConfigError(f"point step must be a whole number >= 1, got {self.point_step}")
        _set(self, "point_step", int(self.point_step))
        if self.pointcloud and not self.outputs:
            raise ConfigError("--pointcloud goes with --rosbag, --foxglove or --mcap")
        if self.rosbag_dir is None:
            for name, value in (("colour", self.rosbag_colour),
                                ("compression", self.rosbag_compression is not
                                 self.Compression.NONE),
                                ("depth", self.rosbag_depth is not self.DepthTransport.RAW)):
                if value:
                    raise ConfigError(f"--rosbag-{name} goes with --rosbag DIR")

    def _check_camera(self) -> None:
        if self.intrinsics is not None:
            if self.fov_deg is not None:
                raise ConfigError("give --fov or --intrinsics, not both")
            values = _numbers(self.intrinsics, 4, "--intrinsics fx,fy,cx,cy")
            if values[0] <= 0 or values[1] <= 0 or values[2] < 0 or values[3] < 0:
                raise ConfigError(f"--intrinsics: fx and fy must be positive and the "
                                  f"principal point inside the picture, got {self.intrinsics!r}")
            _set(self, "intrinsics", values)
        if self.fov_deg is not None:
            try:
                fov = float(self.fov_deg)
            except (TypeError, ValueError):
                fov = math.nan
            if not 0 < fov < 180:
                raise ConfigError(f"--fov must be between 0 and 180 degrees, got {self.fov_deg}")
            _set(self, "fov_deg", fov)
        known = self.known_distances
        points = tuple(_known_distance(p) for p in ([known] if isinstance(known, str) else known))
        if len(points) == 1:
            raise ConfigError("give two or more --known-distance points (one cannot fix both "
                              "the scale and the shift of relative depth)")
        _set(self, "known_distances", points)

    @property
    def outputs(self) -> bool:
        """A bag, a Foxglove server or an MCAP file is asked for."""
        return any(v is not None for v in (self.rosbag_dir, self.foxglove, self.mcap_path))

    @property
    def topic_options(self) -> dict[str, Any]:
        """What every robot output takes alike: frame id, topic prefix, point cloud, step."""
        return {"frame_id": self.frame_id, "topic_prefix": self.topic_prefix,
                "pointcloud": self.pointcloud, "point_step": self.point_step}

    @property
    def foxglove_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the Foxglove server, or ``None``."""
        return None if self.foxglove is None else parse_host_port(self.foxglove)


def _range_m(value: str | Sequence[float]) -> tuple[float, float]:
    """``NEAR:FAR`` metres (text or a pair) as numbers with ``0 <= near < far``."""
    parts = value.split(":") if isinstance(value, str) else list(value)
    try:
        near, far = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"--range-m must be NEAR:FAR in metres (like 0.5:8), got "
                          f"{value!r}") from None
    if not (math.isfinite(near) and math.isfinite(far) and 0 <= near < far):
        raise ConfigError(f"--range-m needs 0 <= NEAR < FAR metres, got {near:g}:{far:g}")
    return near, far


@dataclass(frozen=True)
class RenderSettings:
    """How a depth frame becomes a picture.

    Attributes:
        layout: depth only, side by side (twice as wide), or depth blended over the picture.
        alpha: weight of the depth colours in the overlay, 0..1.
        cmap: one of :data:`COLORMAP_NAMES`.
        invert: show near as dark.
        range_m: ``(near, far)`` in metres: a fixed colour range for metric models
            (``--range-m NEAR:FAR``, also given as that text); ``None``: automatic
            percentiles held steady.
    """

    layout: Layout = Layout.DEPTH
    alpha: float = 0.5
    cmap: str = "inferno"
    invert: bool = False
    range_m: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _set(self, "layout", parse_enum(Layout, self.layout, "layout"))
        if self.range_m is not None:
            _set(self, "range_m", _range_m(self.range_m))
        try:
            alpha = float(self.alpha)
        except (TypeError, ValueError):
            alpha = math.nan
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.cmap not in COLORMAP_NAMES:
            raise ConfigError(
                f"unknown colormap {self.cmap!r}; choose one of {', '.join(COLORMAP_NAMES)}")


#: What a choice of engine that cannot work says (checked only in :class:`ModelSettings`).
OPENVINO_CPU_ONLY = "--backend openvino runs on the cpu; use --backend torch for --device cuda"
INT8_OPENVINO_ONLY = ("--precision int8 runs on OpenVINO (cpu); "
                      "drop --backend torch / --device cuda or use fp32")
CUDA_UNAVAILABLE = "--device cuda: no CUDA GPU is available to torch here; use --device cpu"
RANGE_M_NEEDS_METRIC = ("--range-m sets the colours in metres: it needs a metric model "
                        "(--model dav2-metric-indoor or dav2-metric-outdoor)")
DEFAULT_NETWORK = "midas-small"
"""The ``--model`` used when none is named (:data:`stream.models.registry.DEFAULT_MODEL`)."""


@dataclass(frozen=True)
class ModelSettings:
    """Which network runs where.

    Attributes:
        weights: checkpoint path; ``None`` looks in the usual places.
        backend: the inference engine.
        device: torch's device.
        precision: fp32, int8 (OpenVINO), or auto.
        network: the ``--model`` name (``midas-small``, ``dav2-small``, ...); checked
            against the registry where the network is built.
        input_size: the network's input side instead of the model's default
            (``--input-size``); ``None``: the model's.
    """

    weights: str | None = None
    backend: BackendName = BackendName.AUTO
    device: Device = Device.CPU
    precision: Precision = Precision.AUTO
    network: str = DEFAULT_NETWORK
    input_size: int | None = None

    def __post_init__(self) -> None:
        _set(self, "backend", parse_enum(BackendName, self.backend, "backend"))
        _set(self, "device", parse_enum(Device, self.device, "device"))
        _set(self, "precision", parse_enum(Precision, self.precision, "precision"))
        if self.weights is not None:
            _set(self, "weights", os.fspath(self.weights))
        if self.input_size is not None and (isinstance(self.input_size, bool)
                                            or not isinstance(self.input_size, int)
                                            or not 14 <= self.input_size <= 4096):
            raise ConfigError(f"--input-size must be a whole number of pixels from 14 to "
                              f"4096, not {self.input_size!r}")
        if self.backend is BackendName.OPENVINO and self.device is Device.CUDA:
            raise ConfigError(OPENVINO_CPU_ONLY)
        if self.precision is Precision.INT8 and (self.backend is BackendName.TORCH
                                                 or self.device is Device.CUDA):
            raise ConfigError(INT8_OPENVINO_ONLY)


@dataclass(frozen=True)
class ExportSettings:
    """Raw depth written next to (or instead of) the video.

    Attributes:
        raw_dir: folder for a 16-bit PNG per frame and ``timestamps.csv``; ``None``: none.
        raw_format: PNG, or PNG and float32 ``.npy``.
        raw_unsmoothed: write the network's own per-frame depth, not the smoothed one.
    """

    raw_dir: Path | None = None
    raw_format: RawFormat = RawFormat.PNG
    raw_unsmoothed: bool = False

    def __post_init__(self) -> None:
        _set(self, "raw_format", parse_enum(RawFormat, self.raw_format, "raw format"))
        if self.raw_dir is not None:
            _set(self, "raw_dir", Path(self.raw_dir))


@dataclass(frozen=True)
class RunLimits:
    """How long a run goes on, how much it may hold, where its statistics go.

    Attributes:
        duration_s: stop after this many seconds; ``None`` runs to the end.
        queue_size: frames each file queue may hold (live queues hold one).
        stats_path: write the run's statistics as JSON here.
    """

    duration_s: float | None = None
    queue_size: int = 4
    stats_path: Path | None = None

    def __post_init__(self) -> None:
        if self.duration_s is not None and not (self.duration_s > 0
                                                and math.isfinite(self.duration_s)):
            raise ConfigError(f"duration must be positive, got {self.duration_s}")
        if int(self.queue_size) != self.queue_size or self.queue_size < 1:
            raise ConfigError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.stats_path is not None:
            _set(self, "stats_path", Path(self.stats_path))


@dataclass(frozen=True)
class EncoderSettings:
    """How output videos are encoded (``--codec``, ``--crf``, ``--preset``).

    What can be checked without the output's name is checked here; :meth:`for_container`
    checks the rest once the container is known and fills in the defaults.

    Attributes:
        codec: ``None``: the container's default (H.264 in ``.mp4``/``.mkv``, VP9 in
            ``.webm``).
        crf: quality, lower is better and larger (:data:`CRF_RANGES`); ``None``: the
            codec's default (:data:`CODEC_DEFAULTS`). Not for lossless FFV1.
        preset: speed, one of :data:`PRESET_NAMES`; ``None``: the codec's default. Not for
            FFV1.

    Raises:
        ConfigError: an unknown codec or preset, a CRF out of the codec's range, or a CRF
            or preset given for FFV1.
    """

    codec: VideoCodec | None = None
    crf: int | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.codec is not None:
            _set(self, "codec", parse_enum(VideoCodec, self.codec, "codec"))
        lossless = self.codec is VideoCodec.FFV1
        if self.crf is not None:
            if isinstance(self.crf, bool) or not isinstance(self.crf, (int, float)) \
                    or int(self.crf) != self.crf:
                raise ConfigError(f"--crf must be a whole number, got {self.crf!r}")
            _set(self, "crf", int(self.crf))
            if lossless:
                raise ConfigError("--crf does not apply to --codec ffv1 (lossless); drop --crf")
            lo, hi = CRF_RANGES.get(self.codec, (0, 63))  # type: ignore[arg-type]
            if not lo <= self.crf <= hi:
                what = self.codec.value if self.codec else "any codec"
                raise ConfigError(f"--crf {self.crf} is out of range for {what}: {lo}..{hi}")
        if self.preset is not None:
            if self.preset not in PRESET_NAMES:
                raise ConfigError(f"unknown preset {self.preset!r}; choose one of "
                                  f"{', '.join(PRESET_NAMES)}")
            if lossless:
                raise ConfigError("--preset does not apply to --codec ffv1 (lossless); "
                                  "drop --preset")

    def for_container(self, suffix: str) -> EncoderSettings:
        """These settings for a ``suffix`` file (``.mp4``...), with every default filled in.

        Raises:
            ConfigError: the container cannot hold the codec, or the CRF is out of the
                range of the container's default codec.
        """
        codecs = CONTAINER_CODECS.get(suffix.lower())
        if codecs is None:
            raise ConfigError(f"cannot write video as {suffix or 'a file without extension'} "
                              f"(use {', '.join(CONTAINER_CODECS)})")
        codec = self.codec or codecs[0]
        if codec not in codecs:
            fits = [s for s, cs in CONTAINER_CODECS.items() if codec in cs]
            raise ConfigError(f"a {suffix.lower()} file cannot hold --codec {codec.value}; "
                              f"write {' or '.join(fits)}")
        crf, preset = CODEC_DEFAULTS[codec]
        return EncoderSettings(codec, crf if self.crf is None else self.crf,
                               preset if self.preset is None else self.preset)


@dataclass(frozen=True)
class ZmqSettings:
    """The ZeroMQ publisher (``--zmq ADDR``, ``--zmq-dtype``, ``--zmq-jpeg``).

    Attributes:
        address: where to bind (``tcp://127.0.0.1:5555``); ``None``: no publisher.
        dtype: the depth's type on the wire, ``float16`` or ``float32``; ``None``: float16.
        jpeg: also send the colour frame as JPEG.

    Raises:
        ConfigError: a dtype or JPEG without an address.
    """

    address: str | None = None
    dtype: str | None = None
    jpeg: bool = False

    def __post_init__(self) -> None:
        if self.address is None and (self.dtype is not None or self.jpeg):
            raise ConfigError("--zmq-dtype and --zmq-jpeg go with --zmq ADDR")


#: The groups of :class:`StreamSettings`, by attribute name.
_GROUPS: dict[str, type] = {
    "render": RenderSettings,
    "model": ModelSettings,
    "export": ExportSettings,
    "limits": RunLimits,
    "encoder": EncoderSettings,
}
#: Which group each flat keyword of :class:`StreamSettings` belongs to.
_FLAT = {name: group for group, cls in _GROUPS.items() for name in cls.__dataclass_fields__}


@dataclass(frozen=True, init=False)
class StreamSettings:
    """Everything a conversion or live run is asked to do (shared, read-only, by threads).

    The settings are kept in groups, each of which validates its own values:
    :attr:`render` (:class:`RenderSettings`), :attr:`model` (:class:`ModelSettings`),
    :attr:`export` (:class:`ExportSettings`), :attr:`limits` (:class:`RunLimits`),
    :attr:`encoder` (:class:`EncoderSettings`), :attr:`robot` (:class:`RobotSettings`) and
    :attr:`zmq` (:class:`ZmqSettings`). The constructor also takes each field of the first
    five flat (``StreamSettings(layout="side", precision="int8")``), and reading a flat
    name gives that group's value (``settings.cmap`` is ``settings.render.cmap``).

    Attributes:
        smooth: temporal smoothing strength from 0 (off) to 1.
        overwrite: replace existing outputs.
        snapshot_dir: where the live window's snapshots and recordings go (``None``: the
            current folder; made when missing).

    Raises:
        ConfigError: any value a group refuses, or a keyword no group has.
    """

    render: RenderSettings
    model: ModelSettings
    export: ExportSettings
    limits: RunLimits
    encoder: EncoderSettings
    robot: RobotSettings
    zmq: ZmqSettings
    smooth: float
    overwrite: bool
    snapshot_dir: Path | None

    def __init__(self, *, smooth: bool | float | None = DEFAULT_SMOOTH, overwrite: bool = False,
                 snapshot_dir: str | os.PathLike | None = None,
                 robot: RobotSettings | None = None, zmq: ZmqSettings | None = None,
                 **values: Any) -> None:
        flat: dict[str, dict[str, Any]] = {group: {} for group in _GROUPS}
        groups: dict[str, Any] = {}
        for name, value in values.items():
            if name in _GROUPS:
                groups[name] = value
            elif name in _FLAT:
                flat[_FLAT[name]][name] = value
            else:
                raise ConfigError(f"StreamSettings has no setting {name!r}")
        for group, cls in _GROUPS.items():
            base = groups.get(group)
            if base is not None and not isinstance(base, cls):
                raise ConfigError(f"{group} must be a {cls.__name__}, got {type(base).__name__}")
            made = cls(**flat[group]) if base is None else dataclasses.replace(base, **flat[group])
            _set(self, group, made)
        for name, value, cls in (("robot", robot, RobotSettings), ("zmq", zmq, ZmqSettings)):
            if value is not None and not isinstance(value, cls):
                raise ConfigError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")
            _set(self, name, value if value is not None else cls())
        _set(self, "smooth", smooth_strength(smooth))
        _set(self, "overwrite", bool(overwrite))
        _set(self, "snapshot_dir", Path(snapshot_dir) if snapshot_dir is not None else None)

    def __getattr__(self, name: str) -> Any:
        """A flat name (``settings.cmap``) reads its group's value."""
        group = _FLAT.get(name)
        if group is None or group not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.__dict__[group], name)
