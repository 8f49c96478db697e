"""Publisher: depth frames over the network as ZeroMQ multipart messages (``--zmq``).

A :class:`ZmqPublisher` binds a ZeroMQ publish socket (``tcp://127.0.0.1:5555``,
``tcp://*:5555``, ``ipc:///tmp/depth``) and sends each :class:`~stream.core.records.DepthFrame`
to every subscriber. It never waits for a subscriber: each socket queue holds at most
``hwm`` messages, and a frame that does not fit is dropped and counted
(:attr:`ZmqPublisher.dropped`), so a slow or absent subscriber cannot slow the pipeline.
A dropped frame is not even encoded, nor is one sent while nobody is subscribed
(:attr:`ZmqPublisher.skipped`).

Message (one ZeroMQ multipart message per frame, subscribe to ``b""``):

1. header: UTF-8 JSON object::

       {
         "version": 1,
         "seq": 41,              # this publisher's frame counter; gaps = dropped frames
         "index": 1234,          # source frame index (live sources: gaps = frames skipped)
         "timestamp": 41.17,     # seconds: pts-based for files, monotonic clock for live
         "captured_unix_s": 1767225600.25,  # wall-clock time of capture (sync with other
                                 # sensors; across machines only with synced clocks)
         "height": 480, "width": 640,
         "dtype": "float16",     # "float16" or "float32", little-endian, row-major
         "units": "relative_inverse_depth",  # larger = nearer, NOT metres; or "metres"
                                 # (a dav2-metric model: larger = farther)
         "scale": "smoothed",    # "smoothed" (one scale across frames) or "raw" (per frame)
         "lo": 0.12, "hi": 0.97, # display range used to colour this frame: (far, near)
                                 # for relative depth, (near, far) in metres
         "inference_ms": 31.5,
         "jpeg": false           # true: a third part holds the colour frame
       }

2. depth: ``height * width`` values of ``dtype``:
   ``np.frombuffer(part, "<f2").reshape(height, width)``. float16 halves the bytes and
   keeps about 3 significant digits (values beyond +-65504 are clipped).
3. (only with ``jpeg``) the colour frame as a JPEG (``cv2.imdecode`` gives BGR).

Delivery: with several subscribers a frame is sent to all of them or, when any one's
queue is full, to none (ZeroMQ's ``XPUB_NODROP``), which is what makes drops countable
here; the ``seq`` field lets each subscriber count what it missed. A subscriber that
connects late misses the frames before it (ZeroMQ's "slow joiner");
:meth:`ZmqPublisher.wait_for_subscriber` waits for the first one.

Example:
    >>> with ZmqPublisher("tcp://127.0.0.1:5555") as pub:  # doctest: +SKIP
    ...     for frame in frames:
    ...         pub.publish(frame)
"""

from __future__ import annotations

import enum
import json
import math
import threading
import time
from typing import Any

import cv2
import numpy as np
import zmq

from stream.core.errors import ConfigError, SinkError
from stream.core.records import DepthFrame
from stream.core.settings import is_loopback
from stream.sinks.base import Sink, SinkContext

__all__ = ["HEADER_VERSION", "DEFAULT_HWM", "DepthDtype", "ZmqPublisher", "decode_message",
           "loopback_warning"]

#: Version of the header schema above.
HEADER_VERSION = 1
#: Default high-water mark: messages queued per subscriber before frames are dropped.
DEFAULT_HWM = 2

_FLOAT16_MAX = float(np.finfo(np.float16).max)


class DepthDtype(enum.Enum):
    """Wire type of the depth values (little-endian)."""

    FLOAT16 = "float16"
    FLOAT32 = "float32"

    @property
    def numpy(self) -> np.dtype:
        """The little-endian numpy dtype."""
        return np.dtype("<f2") if self is DepthDtype.FLOAT16 else np.dtype("<f4")


CLOSE_LINGER_MS = 500
"""How long :meth:`ZmqPublisher.close` waits for queued frames to leave (milliseconds)."""


class ZmqPublisher(Sink):
    """Publish depth frames on a ZeroMQ socket; never blocks, drops and counts instead.

    A pipeline sink (``open``/``write``/``close`` on the render thread), usable alone
    too. Thread-safe: one thread may publish while another closes. The socket is bound
    when the publisher is built, so a bad or busy address fails before any thread starts.

    Args:
        address: ZeroMQ endpoint to bind, e.g. ``tcp://127.0.0.1:5555``; a ``*`` port
            (``tcp://127.0.0.1:*``) picks a free one, see :attr:`endpoint`.
        dtype: ``"float16"`` (default) or ``"float32"`` depth on the wire.
        jpeg: also send the colour frame as a JPEG.
        hwm: messages queued per subscriber before frames are dropped (>= 1). Small keeps
            what a subscriber reads fresh.
        jpeg_quality: 1..100.

    Raises:
        ConfigError: bad ``dtype``, ``hwm`` or ``jpeg_quality``.
        SinkError: the address is malformed or cannot be bound (in use, no such interface).
    """

    def __init__(
        self,
        address: str,
        dtype: str | DepthDtype = DepthDtype.FLOAT16,
        jpeg: bool = False,
        hwm: int = DEFAULT_HWM,
        jpeg_quality: int = 85,
    ) -> None:
        try:
            self.dtype = DepthDtype(dtype)
        except ValueError:
            raise ConfigError(f"depth dtype must be float16 or float32, got {dtype!r}") from None
        if not isinstance(hwm, int) or hwm < 1:
            raise ConfigError(f"high-water mark must be an integer >= 1, got {hwm!r}")
        if not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
            raise ConfigError(f"JPEG quality must be 1..100, got {jpeg_quality!r}")
        self.jpeg = bool(jpeg)
        self.jpeg_quality = jpeg_quality
        self.hwm = hwm
        self.sent = 0
        self.dropped = 0
        self.skipped = 0
        self._seq = 0
        self._topics: set[bytes] = set()
        self._lock = threading.Lock()
        self._closed = False
        # Own context: close() can then terminate ZeroMQ's I/O thread too.
        self._context = zmq.Context(io_threads=1)
        try:
            # XPUB rather than PUB: same wire protocol for subscribers, but it tells us
            # when someone subscribes (no encoding for nobody) ...
            sock = self._context.socket(zmq.XPUB)
            sock.setsockopt(zmq.SNDHWM, hwm)
            # ... and with NODROP a full queue is an error we can count, where PUB drops
            # silently.
            sock.setsockopt(zmq.XPUB_NODROP, 1)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(address)
        except zmq.ZMQError as exc:
            self._context.destroy(linger=0)
            raise SinkError(f"cannot publish on {address}: {exc}") from exc
        self._socket = sock
        self.endpoint: str = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        """The bound endpoint, with the actual port when ``address`` had ``*``."""

    # -- subscribers ------------------------------------------------------------------------

    def _read_subscriptions(self) -> None:
        # XPUB hands up each topic's first subscription (b"\x01" + topic) and last
        # unsubscription (b"\x00" + topic), so a set of topics tracks "anyone listening".
        while True:
            try:
                msg = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self._topics.add(msg[1:])
            elif msg[:1] == b"\x00":
                self._topics.discard(msg[1:])

    @property
    def has_subscribers(self) -> bool:
        """Whether at least one subscriber is connected and subscribed."""
        with self._lock:
            if self._closed:
                return False
            self._read_subscriptions()
            return bool(self._topics)

    def wait_for_subscriber(self, timeout_s: float | None = None) -> bool:
        """Wait until a subscriber is connected; ``False`` if ``timeout_s`` passes first.

        Frames published after this returns ``True`` reach that subscriber (no slow-joiner
        loss). ``timeout_s=None`` waits for ever.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self.has_subscribers:
                return True
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0 or self._closed:
                return False
            with self._lock:
                if not self._closed:
                    self._socket.poll(int(left * 1000) + 1, zmq.POLLIN)

    # -- publishing -------------------------------------------------------------------------

    def header(self, frame: DepthFrame, seq: int = 0) -> bytes:
        """The JSON header of ``frame``'s message (schema in the module docstring)."""
        return json.dumps({
            "version": HEADER_VERSION,
            "seq": seq,
            "index": frame.index,
            "timestamp": _finite(frame.timestamp),
            # The frame's monotonic capture time, moved onto the wall clock.
            "captured_unix_s": time.time() - (time.monotonic() - frame.captured),
            "height": int(frame.depth.shape[0]),
            "width": int(frame.depth.shape[1]),
            "dtype": self.dtype.value,
            "units": "metres" if frame.metric else "relative_inverse_depth",
            "scale": "smoothed" if frame.smoothed else "raw",
            "lo": _finite(frame.lo),
            "hi": _finite(frame.hi),
            "inference_ms": _finite(frame.inference_ms),
            "jpeg": self.jpeg,
        }, allow_nan=False).encode()

    def payload(self, frame: DepthFrame) -> list[np.ndarray | bytes]:
        """The parts after the header: the depth and, with ``jpeg``, the colour JPEG.

        Raises:
            SinkError: the colour frame does not encode as JPEG.
        """
        depth = frame.depth
        # Clip only when needed: min and max are a tenth of the cost of a clip pass.
        if self.dtype is DepthDtype.FLOAT16 and depth.size and (
                depth.max() > _FLOAT16_MAX or depth.min() < -_FLOAT16_MAX):
            depth = np.clip(depth, -_FLOAT16_MAX, _FLOAT16_MAX)
        # The array itself, not .tobytes(): ZeroMQ sends from its buffer (one copy less).
        parts: list[np.ndarray | bytes] = [np.ascontiguousarray(depth, dtype=self.dtype.numpy)]
        if self.jpeg:
            ok, data = cv2.imencode(".jpg", frame.image,
                                    [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise SinkError("cannot encode the colour frame as JPEG")
            parts.append(data)
        return parts

    def encode(self, frame: DepthFrame, seq: int = 0) -> list[bytes]:
        """The whole multipart message for ``frame`` as bytes (header, depth, JPEG)."""
        return [self.header(frame, seq)] + [bytes(memoryview(p)) for p in self.payload(frame)]

    def publish(self, frame: DepthFrame) -> bool:
        """Send ``frame`` to the subscribers without waiting.

        The depth (and JPEG) are encoded only once the header is accepted, so a dropped
        frame costs next to nothing.

        Returns:
            ``True`` if it was queued for every subscriber; ``False`` if it was dropped
            (a subscriber's queue is full: :attr:`dropped` + 1) or nobody is subscribed
            (:attr:`skipped` + 1).

        Raises:
            SinkError: the publisher is closed, or the colour frame does not encode.
        """
        with self._lock:
            if self._closed:
                raise SinkError(f"publisher on {self.endpoint} is closed")
            seq = self._seq
            self._seq += 1
            self._read_subscriptions()
            if not self._topics:
                self.skipped += 1
                return False
            try:
                # With NODROP and NOBLOCK a full queue refuses the first part, before
                # anything is sent.
                self._socket.send(self.header(frame, seq), zmq.NOBLOCK | zmq.SNDMORE)
            except zmq.Again:
                self.dropped += 1
                return False
            # Once a first part is in, ZeroMQ takes the rest of the message without
            # waiting (its queue limit counts whole messages), so these sends never block.
            try:
                parts = self.payload(frame)
            except SinkError:
                self._socket.send(b"")  # end the message cleanly (a broken JPEG part)
                raise
            for n, part in enumerate(parts):
                last = n == len(parts) - 1
                self._socket.send(part, 0 if last else zmq.SNDMORE, copy=False)
            self.sent += 1
            return True

    def open(self, context: SinkContext) -> None:
        """Sink interface: nothing to prepare (the socket is bound already)."""

    def write(self, frame: DepthFrame) -> None:
        """Sink interface: :meth:`publish`, ignoring whether the frame was dropped."""
        self.publish(frame)

    def close(self) -> None:
        """Close the socket and its ZeroMQ context (safe to call twice)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # A short linger lets frames already queued reach connected subscribers (the
            # last frame of a conversion was lost with linger=0); it is bounded, so a
            # stuck subscriber still cannot hold the process.
            self._socket.close(linger=CLOSE_LINGER_MS)
            self._context.term()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect: a loopback address, ``ipc`` or ``inproc``.

        ``tcp://*:PORT`` binds every interface (its endpoint reads ``tcp://0.0.0.0:PORT``).
        """
        transport, _, rest = self.endpoint.partition("://")
        if transport in ("ipc", "inproc"):
            return True
        return is_loopback(rest.rpartition(":")[0].strip("[]"))

    def stats(self) -> dict[str, int]:
        """``{"sent", "dropped", "skipped"}`` counts so far."""
        return {"sent": self.sent, "dropped": self.dropped, "skipped": self.skipped}

    def __enter__(self) -> ZmqPublisher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ZmqPublisher({self.endpoint!r}, dtype={self.dtype.value!r}, jpeg={self.jpeg}, "
                f"sent={self.sent}, dropped={self.dropped}, skipped={self.skipped})")


def loopback_warning(pub: ZmqPublisher) -> str | None:
    """A one-line warning when ``pub`` is reachable beyond this machine, else ``None``."""
    if pub.loopback:
        return None
    what = "the depth frames and the camera's pictures" if pub.jpeg else "the depth frames"
    return (f"the ZeroMQ publisher at {pub.endpoint} is reachable from the network and has no "
            f"authentication; anyone who can connect receives {what}")


def decode_message(parts: list[bytes]) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """Receiving side: ``(header, depth float32 [H, W], BGR image or None)`` from a message.

    Raises:
        ValueError: the message does not follow the schema above.
    """
    if len(parts) not in (2, 3):
        raise ValueError(f"expected 2 or 3 message parts, got {len(parts)}")
    try:
        header = json.loads(bytes(parts[0]))
        shape = (int(header["height"]), int(header["width"]))
        depth = np.frombuffer(parts[1], DepthDtype(header["dtype"]).numpy).reshape(shape)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a depthstream header: {exc}") from exc
    image = None
    if len(parts) == 3:
        image = cv2.imdecode(np.frombuffer(parts[2], np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("the third part is not a JPEG")
    return header, depth.astype(np.float32), image


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
