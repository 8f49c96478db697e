"""Tests for stream.sinks.publisher: depth frames over ZeroMQ, never blocking, drops counted."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from support.clips import make_clip
from support.fakes import cheap_estimator

from stream.core.errors import ConfigError, SinkError
from stream.core.records import DepthFrame, DepthKind
from stream.core.settings import RawFormat, StreamSettings
from stream.core.stats import RunStats
from stream.runtime.pipeline import Pipeline
from stream.sinks.base import RawDepthSink, Sink, write_depth_raw
from stream.sinks.publisher import (
    HEADER_VERSION,
    ZmqPublisher,
    decode_message,
    loopback_warning,
)
from stream.sources.capture import FileSource

LOCAL = "tcp://127.0.0.1:*"


def _frame(index: int, h: int = 48, w: int = 64, smoothed: bool = False,
           scale: float = 1.0) -> DepthFrame:
    rng = np.random.default_rng(index)
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.dstack([(xx * 4 + index) % 256, (yy * 5) % 256,
                       np.full((h, w), 128)]).astype(np.uint8)
    depth = (rng.uniform(0.0, 1.0, (h, w)) * scale).astype(np.float32)
    return DepthFrame(index=index, timestamp=index / 30.0, image=image, depth=depth,
                      inference_ms=12.5 + index, lo=0.1 * index, hi=0.9 + index,
                      smoothed=smoothed)


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    """A ZeroMQ context for the test's subscriber sockets."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _subscribe(ctx: zmq.Context, pub: ZmqPublisher, rcvhwm: int = 1000) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, rcvhwm)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub.endpoint)
    # Slow joiner: frames sent before the subscription reaches the publisher are lost.
    assert pub.wait_for_subscriber(timeout_s=10.0)
    return sub


def _recv(sub: zmq.Socket, timeout_ms: int = 5000) -> list[bytes]:
    assert sub.poll(timeout_ms), "no message arrived"
    return sub.recv_multipart()


def test_wait_for_subscriber_then_every_frame_arrives(context: zmq.Context) -> None:
    """After ``wait_for_subscriber`` no frame is lost; the publisher saw none before it."""
    with ZmqPublisher(LOCAL, dtype="float32") as pub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith("*")
        assert not pub.wait_for_subscriber(timeout_s=0.05)
        sub = _subscribe(context, pub)
        assert pub.has_subscribers
        for i in range(5):
            assert pub.publish(_frame(i))
            header, depth, image = decode_message(_recv(sub))
            assert header["index"] == i and image is None
        assert pub.stats() == {"sent": 5, "dropped": 0, "skipped": 0}


def test_a_metric_model_s_frames_say_metres(context: zmq.Context) -> None:
    """A metric model's depth goes out as it is, in metres, and its header says so."""
    metres = dataclasses.replace(_frame(3, scale=20.0), kind=DepthKind.METRIC, lo=0.5, hi=19.0)
    with ZmqPublisher(LOCAL, dtype="float32") as pub:
        sub = _subscribe(context, pub)
        assert pub.publish(metres) and pub.publish(_frame(4))
        (header, depth, _), (relative, _, _) = (decode_message(_recv(sub)) for _ in range(2))
    assert header["units"] == "metres" and (header["lo"], header["hi"]) == (0.5, 19.0)
    np.testing.assert_array_equal(depth, metres.depth)
    assert relative["units"] == "relative_inverse_depth"


@pytest.mark.parametrize("smoothed", [False, True])
def test_header_fields_and_float32_bytes_equal_raw_export(context: zmq.Context, tmp_path,
                                                          smoothed: bool) -> None:
    """Header carries the frame's fields; float32 depth bytes equal the ``.npy`` export."""
    frame = _frame(7, h=30, w=50, smoothed=smoothed)
    with ZmqPublisher(LOCAL, dtype="float32") as pub:
        sub = _subscribe(context, pub)
        assert pub.publish(frame)
        parts = _recv(sub)
    assert len(parts) == 2
    header = json.loads(parts[0])
    # Built moments ago: its capture time on the wall clock is now, give or take.
    assert abs(header.pop("captured_unix_s") - time.time()) < 60
    assert header == {
        "version": HEADER_VERSION, "seq": 0, "index": 7, "timestamp": pytest.approx(7 / 30),
        "height": 30, "width": 50, "dtype": "float32", "units": "relative_inverse_depth",
        "scale": "smoothed" if smoothed else "raw", "lo": pytest.approx(0.7),
        "hi": pytest.approx(7.9), "inference_ms": pytest.approx(19.5), "jpeg": False,
    }
    exported = write_depth_raw(tmp_path / "d", frame.depth, frame.lo, frame.hi, npy=True)
    raw = np.load(exported[-1])
    assert parts[1] == raw.astype("<f4").tobytes()
    np.testing.assert_array_equal(np.frombuffer(parts[1], "<f4").reshape(30, 50), frame.depth)


def test_float16_halves_bytes_keeps_three_digits_and_clips(context: zmq.Context) -> None:
    """float16: exact ``astype`` bytes, relative error < 1e-3, huge values clipped not inf."""
    frame = _frame(3, scale=1000.0)
    frame.depth[0, 0] = 1e6  # beyond float16's range
    frame.depth[0, 1] = -1e6
    with ZmqPublisher(LOCAL) as pub:
        assert pub.dtype.value == "float16"
        sub = _subscribe(context, pub)
        pub.publish(frame)
        parts = _recv(sub)
    header, depth, _ = decode_message(parts)
    assert header["dtype"] == "float16"
    assert len(parts[1]) == frame.depth.size * 2
    assert depth.dtype == np.float32 and depth.shape == frame.depth.shape
    assert np.isfinite(depth).all()
    assert depth[0, 0] == np.finfo(np.float16).max and depth[0, 1] == np.finfo(np.float16).min
    np.testing.assert_allclose(depth.ravel()[2:], frame.depth.ravel()[2:], rtol=1e-3)


def test_jpeg_part_decodes_to_the_colour_frame(context: zmq.Context) -> None:
    """With ``jpeg`` a third part holds the BGR frame (lossy, close)."""
    frame = _frame(2, h=64, w=80)
    with ZmqPublisher(LOCAL, jpeg=True, jpeg_quality=95) as pub:
        sub = _subscribe(context, pub)
        pub.publish(frame)
        parts = _recv(sub)
    assert len(parts) == 3
    header, _, image = decode_message(parts)
    assert header["jpeg"] is True
    bgr = cv2.imdecode(np.frombuffer(parts[2], np.uint8), cv2.IMREAD_COLOR)
    assert bgr.shape == frame.image.shape
    np.testing.assert_array_equal(bgr, image)
    assert np.abs(bgr.astype(int) - frame.image.astype(int)).mean() < 4


def test_subscriber_that_never_reads_does_not_block_and_drops_are_exact(
        context: zmq.Context) -> None:
    """2000 frames to a stuck subscriber all return; what it later reads is exactly ``sent``."""
    n = 2000
    with ZmqPublisher(LOCAL, dtype="float32", hwm=2) as pub:
        sub = _subscribe(context, pub, rcvhwm=2)
        frames = [_frame(i, h=120, w=160) for i in range(4)]
        encoded = []
        payload = pub.payload
        pub.payload = lambda frame: encoded.append(frame.index) or payload(frame)
        accepted = [pub.publish(frames[i % 4]) for i in range(n)]
        assert pub.sent + pub.dropped == n and pub.skipped == 0
        assert len(encoded) == pub.sent  # a dropped frame is not even encoded
        assert pub.dropped > n // 2  # 75 kB frames: the socket buffers hold few of them
        assert pub.sent == sum(accepted)
        # The frames it did accept are all delivered, in order, once the subscriber reads.
        seqs = []
        while sub.poll(500):
            seqs.append(json.loads(sub.recv_multipart()[0])["seq"])
    assert seqs == [i for i, ok in enumerate(accepted) if ok]


def test_no_subscriber_skips_without_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody listening: ``publish`` returns False, counts a skip, encodes nothing."""
    with ZmqPublisher(LOCAL, jpeg=True) as pub:
        monkeypatch.setattr(pub, "payload", lambda *a, **k: pytest.fail("encoded for nobody"))
        assert not pub.publish(_frame(0))
        assert pub.stats() == {"sent": 0, "dropped": 0, "skipped": 1}


def test_subscriber_leaving_is_noticed(context: zmq.Context) -> None:
    """When the last subscriber disconnects, frames are skipped again."""
    with ZmqPublisher(LOCAL) as pub:
        sub = _subscribe(context, pub)
        sub.close(linger=0)
        for _ in range(200):
            if not pub.has_subscribers:
                break
            time.sleep(0.02)
        assert not pub.has_subscribers
        assert not pub.publish(_frame(0)) and pub.skipped == 1


def test_publisher_is_a_pipeline_sink() -> None:
    """The pipeline can take it as one of its sinks."""
    with ZmqPublisher(LOCAL) as pub:
        assert isinstance(pub, Sink) and not pub.done


def test_close_is_idempotent_and_publish_after_close_fails() -> None:
    """``close`` twice is fine; the context manager closes; publishing after is an error."""
    with ZmqPublisher(LOCAL) as pub:
        pass
    assert pub.closed
    pub.close()
    with pytest.raises(SinkError, match="closed"):
        pub.publish(_frame(0))
    assert not pub.has_subscribers
    assert not pub.wait_for_subscriber(timeout_s=0.01)


def test_port_is_free_again_after_close() -> None:
    """Closing releases the address at once (no linger), so it can be bound again."""
    pub = ZmqPublisher(LOCAL)
    endpoint = pub.endpoint
    pub.close()
    ZmqPublisher(endpoint).close()


def test_address_in_use_is_a_sink_error() -> None:
    """Binding a busy port fails with SinkError naming the address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SinkError, match=f"tcp://127.0.0.1:{port}"):
            ZmqPublisher(f"tcp://127.0.0.1:{port}")


@pytest.mark.parametrize(("address", "jpeg", "warned"), [
    ("tcp://*:*", False, "receives the depth frames"),  # every interface
    ("tcp://0.0.0.0:*", True, "receives the depth frames and the camera's pictures"),
    (LOCAL, False, None),
    ("tcp://localhost:*", False, None),
    ("inproc://depth-test", False, None),
])
def test_a_publisher_reachable_from_the_network_is_warned_about(address: str, jpeg: bool,
                                                                warned: str | None) -> None:
    """As ``--foxglove`` does: binding beyond this machine, with no authentication, is said."""
    with ZmqPublisher(address, jpeg=jpeg) as pub:
        warning = loopback_warning(pub)
        if warned is None:
            assert pub.loopback and warning is None
        else:
            assert not pub.loopback
            assert warning == (f"the ZeroMQ publisher at {pub.endpoint} is reachable from the "
                               f"network and has no authentication; anyone who can connect "
                               f"{warned}")


@pytest.mark.parametrize("address", ["127.0.0.1:5555", "tcp://127.0.0.1:notaport", "bogus://x"])
def test_malformed_address_is_a_sink_error(address: str) -> None:
    """An address ZeroMQ cannot bind is a SinkError (an OSError), not a ZMQError."""
    with pytest.raises(OSError):
        ZmqPublisher(address)
    with pytest.raises(SinkError):
        ZmqPublisher(address)


@pytest.mark.parametrize("kwargs", [{"dtype": "float64"}, {"hwm": 0}, {"hwm": 1.5},
                                    {"jpeg_quality": 0}, {"jpeg_quality": 101}])
def test_bad_settings_are_config_errors(kwargs: dict) -> None:
    """Out-of-range settings fail before any socket is opened."""
    with pytest.raises(ConfigError):
        ZmqPublisher(LOCAL, **kwargs)


def test_encode_is_the_message_publish_sends(context: zmq.Context) -> None:
    """``encode`` gives the same bytes as a received message (for recording or replay)."""
    frame = _frame(5)
    with ZmqPublisher(LOCAL, jpeg=True) as pub:
        sub = _subscribe(context, pub)
        pub.publish(frame)
        got, want = _recv(sub), pub.encode(frame, seq=0)
    assert got[1:] == want[1:]
    got_header, want_header = json.loads(got[0]), json.loads(want[0])
    # The wall-clock capture time is worked out at each call: equal to a few microseconds.
    assert got_header.pop("captured_unix_s") == pytest.approx(
        want_header.pop("captured_unix_s"), abs=0.01)
    assert got_header == want_header


def test_decode_message_rejects_foreign_messages() -> None:
    """The receiving helper says when a message is not ours."""
    with pytest.raises(ValueError):
        decode_message([b"{}", b""])
    with pytest.raises(ValueError):
        decode_message([b"not json", b""])
    with pytest.raises(ValueError):
        decode_message([b"only one part"])


def test_sample_subscriber_prints_the_frames(tmp_path) -> None:
    """``samples/zmq_subscriber.py`` receives and decodes what the publisher sends."""
    script = Path(__file__).parents[2] / "samples" / "zmq_subscriber.py"
    with ZmqPublisher(LOCAL, jpeg=True) as pub:
        proc = subprocess.Popen([sys.executable, str(script), pub.endpoint, "--count", "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert pub.wait_for_subscriber(timeout_s=30.0)
            index = 0
            while proc.poll() is None and index < 500:
                pub.publish(_frame(index, h=40, w=60, smoothed=True))
                index += 1
                time.sleep(0.02)
            out, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == f"listening on {pub.endpoint}"
    assert len(lines) == 4
    for line in lines[1:]:
        assert "60x40 smoothed" in line


# --------------------------------------------------------------------------- in a pipeline


def _run(clip: Path, sinks: list, smooth: float = 0.0) -> RunStats:
    pipeline = Pipeline(FileSource(clip), cheap_estimator(), sinks, StreamSettings(smooth=smooth))
    with pipeline.start():
        return pipeline.join(timeout=120)


def test_pipeline_frames_arrive_equal_to_the_raw_depth_export(context: zmq.Context,
                                                              tmp_path: Path) -> None:
    """Through a pipeline: every frame, headers from the run, bytes == ``depth_*.npy``."""
    clip = make_clip(tmp_path / "c.mp4", 8, size_wh=(64, 48), audio=False)
    raw = RawDepthSink(tmp_path / "raw", RawFormat.NPY)
    # A queue deep enough for the whole clip: this test is about content, not drops.
    with ZmqPublisher(LOCAL, dtype="float32", hwm=100) as pub:
        sub = _subscribe(context, pub)
        stats = _run(clip, [raw, pub])
        messages = []
        while sub.poll(1000):
            messages.append(sub.recv_multipart())
    assert stats.frames_written == 8 and pub.sent == 8 and pub.dropped == 0
    rows = (tmp_path / "raw" / "timestamps.csv").read_text().splitlines()[1:]
    assert len(messages) == len(rows) == 8
    for n, (parts, row) in enumerate(zip(messages, rows)):
        header = json.loads(parts[0])
        index, seconds, lo, hi, scale = row.split(",")
        depth = np.load(tmp_path / "raw" / f"depth_{n:06d}.npy")
        assert header["seq"] == header["index"] == int(index) == n
        assert header["timestamp"] == float(seconds)
        assert (float(lo), float(hi)) == (float(depth.min()), float(depth.max()))
        assert header["lo"] < header["hi"]  # the display range, eased across frames
        assert (header["height"], header["width"], header["scale"]) == (48, 64, scale)
        assert scale == "raw"
        assert parts[1] == depth.tobytes()


def test_stuck_subscriber_does_not_change_the_pipeline_frame_count(context: zmq.Context,
                                                                   tmp_path: Path) -> None:
    """A subscriber that never reads: the same frames are written, drops are counted."""
    clip = make_clip(tmp_path / "c.mp4", 40, size_wh=(320, 240), audio=False)
    alone = _run(clip, [])
    with ZmqPublisher(LOCAL, dtype="float32") as pub:
        sub = _subscribe(context, pub, rcvhwm=1)  # never read
        stuck = _run(clip, [pub])
        sub.close(linger=0)
    assert alone.frames_written == stuck.frames_written == 40
    assert pub.sent + pub.dropped == 40 and pub.dropped > 0
