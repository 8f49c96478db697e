"""Foxglove sinks: a live WebSocket server (``--foxglove``) and an MCAP recording (``--mcap``).

Both use the Foxglove SDK (``foxglove-sdk``) and the same channels, under the topic
prefix (default ``/depthstream``), all with ``frame_id`` from the settings:

* ``<prefix>/depth/image_raw``: ``foxglove.RawImage``, ``32FC1`` relative inverse depth
  (larger = nearer, unknown scale and shift: *not metres*);
* ``<prefix>/color/image_raw/compressed``: ``foxglove.CompressedImage``, the input as JPEG;
* ``<prefix>/depth/camera_info``: ``foxglove.CameraCalibration`` of the camera model;
* with ``pointcloud``: ``<prefix>/depth/points``, ``foxglove.PointCloud`` (x, y, z float32;
  red, green, blue, alpha uint8), in metres when known distances were given, else in
  relative units with ``frame_id`` ``<frame_id>_relative``.

:class:`McapSink` records every frame (on the render thread) to an MCAP file written
through :class:`stream.core.files.PartFile`, so the file is whole or absent.
:class:`FoxgloveServerSink` serves live viewers and never slows the pipeline: it encodes
only the channels somebody subscribed to, on a sender thread of its own that takes the
newest frame (a frame replaced before it was sent is counted in ``dropped``), and the
SDK keeps at most a few frames per viewer, dropping a slow viewer's oldest. The server
has no authentication: it listens on 127.0.0.1 unless a host is given. Each sink has
its own SDK context, so a recording and a live view never mix. The server sink starts
its sender thread, and on close a thread that stops the server (waited for at most
:data:`STOP_WAIT_S`: a frozen viewer cannot hold the end of a run); the MCAP sink
touches its file.

Example:
    >>> sink = FoxgloveServerSink("127.0.0.1", 8765)  # doctest: +SKIP
    >>> print(sink.url)  # ws://127.0.0.1:8765: "Open connection" in Foxglove  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import cv2
import numpy as np

from stream.core.errors import SinkError
from stream.core.files import PartFile, check_output_path
from stream.core.records import DepthFrame, DepthKind
from stream.core.settings import StreamSettings, is_loopback
from stream.geometry.camera import POINT_STRIDE
from stream.robotics.rosbag import DEPTH_UNITS, depth_units, topic_names
from stream.robotics.stamps import Stamper, split_ns
from stream.sinks.base import Sink, SinkContext

__all__ = [
    "BACKLOG_FRAMES",
    "STOP_WAIT_S",
    "FoxgloveChannels",
    "McapSink",
    "FoxgloveServerSink",
    "loopback_warning",
]

_JPEG_QUALITY = 85
#: Frames the SDK may queue for one viewer before it drops that viewer's oldest.
BACKLOG_FRAMES = 2
#: How long closing the server waits for viewers to take their close frame (seconds).
STOP_WAIT_S = 0.5


class FoxgloveChannels:
    """The depthstream channels in one Foxglove SDK context, and one frame's messages.

    Args:
        context: a ``foxglove.Context`` (its sinks receive what is logged here).
        topic_prefix: namespace of the channels.
        frame_id: ``frame_id`` of every message.
        pointcloud: add the point cloud channel.
        point_step: pixel step of the point clouds.
        units: what the depth images hold, in words (the depth channel's metadata).
    """

    def __init__(self, context: Any, topic_prefix: str = "/depthstream",
                 frame_id: str = "camera", pointcloud: bool = False,
                 point_step: int = 4, units: str = DEPTH_UNITS) -> None:
        from foxglove import channels

        topics = topic_names(topic_prefix)
        self.frame_id, self.point_step = frame_id, point_step
        self.channels: dict[str, Any] = {
            "depth": channels.RawImageChannel(topics["depth"], context=context,
                                              metadata={"units": units}),
            "jpeg": channels.CompressedImageChannel(topics["jpeg"], context=context),
            "info": channels.CameraCalibrationChannel(topics["info"], context=context),
        }
        if pointcloud:
            self.channels["points"] = channels.PointCloudChannel(topics["points"],
                                                                 context=context)

    @property
    def count(self) -> int:
        """Messages per frame."""
        return len(self.channels)

    def subscribed(self) -> bool:
        """Some sink (a viewer, a file) takes at least one channel."""
        return any(channel.has_sinks() for channel in self.channels.values())

    def log(self, frame: DepthFrame, stamp_ns: int, only_subscribed: bool = False) -> None:
        """Encode ``frame`` for each channel (``only_subscribed``: each one taken) and log it."""
        from foxglove.messages import Timestamp

        stamp = Timestamp(*split_ns(stamp_ns))
        for kind, channel in self.channels.items():
            if only_subscribed and not channel.has_sinks():
                continue
            channel.log(getattr(self, f"_{kind}")(frame, stamp), log_time=stamp_ns)

    def close(self) -> None:
        """Close the channels (safe twice)."""
        for channel in self.channels.values():
            channel.close()

    # -- messages ----------------------------------------------------------------------

    def _depth(self, frame: DepthFrame, stamp: Any) -> Any:
        from foxglove.messages import RawImage

        height, width = frame.depth.shape
        data = np.ascontiguousarray(frame.depth, dtype="<f4").tobytes()
        return RawImage(timestamp=stamp, frame_id=self.frame_id, width=width, height=height,
                        encoding="32FC1", step=4 * width, data=data)

    def _jpeg(self, frame: DepthFrame, stamp: Any) -> Any:
        from foxglove.messages import CompressedImage

        ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise SinkError("cannot encode a frame as JPEG")
        return CompressedImage(timestamp=stamp, frame_id=self.frame_id, data=data.tobytes(),
                               format="jpeg")

    def _info(self, frame: DepthFrame, stamp: Any) -> Any:
        from foxglove.messages import CameraCalibration

        camera = frame.camera
        if camera is None:
            raise SinkError("the Foxglove sinks need frames with a camera model")
        return CameraCalibration(timestamp=stamp, frame_id=self.frame_id, width=camera.width,
                                 height=camera.height, distortion_model="plumb_bob",
                                 D=list(camera.d), K=list(camera.k), R=list(camera.r),
                                 P=list(camera.p))

    def _points(self, frame: DepthFrame, stamp: Any) -> Any:
        from foxglove.messages import (
            PackedElementField,
            PackedElementFieldNumericType,
            PointCloud,
            Pose,
            Quaternion,
            Vector3,
        )

        cloud = frame.points(self.point_step)
        f32, u8 = PackedElementFieldNumericType.Float32, PackedElementFieldNumericType.Uint8
        layout = (("x", 0, f32), ("y", 4, f32), ("z", 8, f32), ("blue", 12, u8),
                  ("green", 13, u8), ("red", 14, u8), ("alpha", 15, u8))
        fields = [PackedElementField(name=n, offset=o, type=t) for n, o, t in layout]
        frame_id = self.frame_id if cloud.metric else f"{self.frame_id}_relative"
        pose = Pose(position=Vector3(x=0.0, y=0.0, z=0.0),
                    orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))
        return PointCloud(timestamp=stamp, frame_id=frame_id, pose=pose,
                          point_stride=POINT_STRIDE, fields=fields, data=cloud.to_bytes())


class McapSink(Sink):
    """Record every frame's Foxglove messages to an MCAP file (Foxglove opens it).

    Args:
        path: the ``.mcap`` file; its folder must exist.
        topic_prefix, frame_id, pointcloud, point_step: see :class:`FoxgloveChannels`.
        stamper: message times (default: the video's pts, the capture clock live).
        kind: what the frames' depth will hold (the depth channel's units, announced
            before the first frame).
        overwrite: replace an existing file.

    Raises:
        SinkError: the folder is missing or the file exists (without ``overwrite``).
    """

    def __init__(self, path: str | os.PathLike, *, topic_prefix: str = "/depthstream",
                 frame_id: str = "camera", pointcloud: bool = False, point_step: int = 4,
                 stamper: Stamper | None = None, overwrite: bool = False) -> None:
        self.path = check_output_path(path, overwrite)
        self._channel_args = (topic_prefix, frame_id, pointcloud, point_step)
        self.stamper = stamper or Stamper()
        self.frames_written = 0
        self._writer: Any = None
        self._part: PartFile | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: StreamSettings, stamper: Stamper) -> McapSink:
        """The sink ``settings.robot`` asks for (``mcap_path`` must be set)."""
        robot = settings.robot
        assert robot is not None and robot.mcap_path is not None
        return cls(robot.mcap_path, stamper=stamper, overwrite=settings.overwrite,
                   **robot.topic_options)

    def open(self, context: SinkContext) -> None:  # noqa: D102
        import foxglove

        self.stamper.open(context.info)
        self._part = PartFile(self.path)
        self._context = foxglove.Context()
        try:
            self._writer = foxglove.open_mcap(self._part.path, allow_overwrite=True,
                                              context=self._context)
        except Exception as exc:  # noqa: BLE001 - the SDK raises its own errors
            self._part.discard()
            raise SinkError(f"cannot write {self.path}: {exc}") from exc
        units = depth_units(context.kind)
        self._writer.write_metadata("depthstream", {"depth_units": units})
        self._channels = FoxgloveChannels(self._context, *self._channel_args, units=units)

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        self._channels.log(frame, self.stamper.stamp_ns(frame))
        self.frames_written += 1

    def close(self) -> None:  # noqa: D102
        if self._closed or self._writer is None or self._part is None:
            return
        self._closed = True
        self._channels.close()
        try:
            self._writer.close()
        except Exception as exc:  # noqa: BLE001
            self._part.discard()
            raise SinkError(f"cannot finish {self.path}: {exc}") from exc
        if self.frames_written:
            self._part.commit()
        else:
            self._part.discard()

    def abort(self, error: BaseException | None = None) -> str | None:
        """The run failed: end without putting a file at the path (safe to call twice)."""
        if self._closed or self._part is None:
            return None
        self._closed = True
        self._channels.close()
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the file is dropped whatever it says
                self._writer.close()
        self._part.discard()
        return None


class FoxgloveServerSink(Sink):
    """Serve depth frames live to Foxglove over WebSocket; never waits for a viewer.

    The server starts when the sink is made (a busy port fails before the model loads)
    and stops when it is closed. Counters: :attr:`sent` (frames handed to the server),
    :attr:`dropped` (replaced by a newer frame before the sender got to them) and
    :attr:`skipped` (nobody subscribed).

    Args:
        host: address to listen on; anything but loopback is reachable from the network,
            with no authentication.
        port: TCP port; 0 picks a free one (see :attr:`port`).
        topic_prefix, frame_id, pointcloud, point_step: see :class:`FoxgloveChannels`.
        stamper: message times (default: the video's pts, the capture clock live).

    Raises:
        SinkError: the server cannot listen there (port in use, no such address).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, *,
                 topic_prefix: str = "/depthstream", frame_id: str = "camera",
                 pointcloud: bool = False, point_step: int = 4,
                 stamper: Stamper | None = None,
                 kind: DepthKind = DepthKind.RELATIVE) -> None:
        import foxglove

        self.host = host
        self.stamper = stamper or Stamper()
        self._context = foxglove.Context()
        self._channels = FoxgloveChannels(self._context, topic_prefix, frame_id, pointcloud,
                                          point_step, units=depth_units(kind))
        try:
            self._server = foxglove.start_server(
                name="depthstream", host=host, port=port, context=self._context,
                message_backlog_size=BACKLOG_FRAMES * self._channels.count)
        except Exception as exc:  # noqa: BLE001 - the SDK raises its own errors
            self._channels.close()
            raise SinkError(f"cannot start the Foxglove server on {host}:{port}: {exc}") from exc
        self.port: int = self._server.port
        self.sent = self.dropped = self.skipped = 0
        self._cond = threading.Condition()
        self._slot: tuple[DepthFrame, int] | None = None
        self._closing = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: StreamSettings, stamper: Stamper,
                      kind: DepthKind = DepthKind.RELATIVE) -> FoxgloveServerSink:
        """The server ``settings.robot`` asks for (``foxglove`` must be set)."""
        robot = settings.robot
        assert robot is not None and robot.foxglove_address is not None
        host, port = robot.foxglove_address
        return cls(host, port, stamper=stamper, kind=kind, **robot.topic_options)

    @property
    def url(self) -> str:
        """``ws://host:port`` to open in Foxglove ("Open connection")."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        """Only this machine can connect."""
        return is_loopback(self.host)

    def open(self, context: SinkContext) -> None:  # noqa: D102
        self.stamper.open(context.info)
        self._thread = threading.Thread(target=self._send_loop, name="depthstream-foxglove",
                                        daemon=True)
        self._thread.start()

    def write(self, frame: DepthFrame) -> None:  # noqa: D102
        if self._error is not None:
            raise SinkError(f"Foxglove server: {self._error}") from self._error
        if not self._channels.subscribed():
            self.skipped += 1
            return
        stamp = self.stamper.stamp_ns(frame)
        with self._cond:
            if self._slot is not None:
                self.dropped += 1
            self._slot = (frame, stamp)
            self._cond.notify()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._closing:
                    self._cond.wait()
                if self._slot is None:
                    return
                frame, stamp = self._slot
                self._slot = None
            try:
                self._channels.log(frame, stamp, only_subscribed=True)
            except Exception as exc:  # noqa: BLE001 - reported by the next write or close
                self._error = exc
                return
            self.sent += 1

    def close(self) -> None:  # noqa: D102
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self._channels.close()
        # The SDK's stop waits for every viewer to take its close frame; one that stopped
        # reading would hold the pipeline's end forever. Past the wait, the server
        # finishes on its own (a daemon thread; the process exit ends it).
        stopper = threading.Thread(target=self._server.stop, name="depthstream-foxglove-stop",
                                   daemon=True)
        stopper.start()
        stopper.join(STOP_WAIT_S)
        if self._error is not None:
            raise SinkError(f"Foxglove server: {self._error}") from self._error


def loopback_warning(sink: FoxgloveServerSink) -> str | None:
    """A one-line warning when ``sink`` listens beyond this machine, else ``None``."""
    if sink.loopback:
        return None
    return (f"the Foxglove server at {sink.url} is reachable from the network and has no "
            f"authentication; anyone who can connect sees the camera")
