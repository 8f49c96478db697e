"""``--foxglove`` and ``--mcap``: a Foxglove WebSocket client and the ``mcap`` reader.

The client below speaks the Foxglove WebSocket protocol itself (advertise, subscribe,
binary message frames) and decodes the protobuf messages by hand, so the test depends on
the protocol, not on the SDK that serves it. The network is the cheap test double.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from support.clips import NTSC, make_clip, read_video
from websockets.sync.client import connect

from stream.cli import main
from stream.core.settings import is_loopback, parse_host_port

SCHEMAS = {
    "/depthstream/depth/image_raw": "foxglove.RawImage",
    "/depthstream/color/image_raw/compressed": "foxglove.CompressedImage",
    "/depthstream/depth/camera_info": "foxglove.CameraCalibration",
    "/depthstream/depth/points": "foxglove.PointCloud",
}
# The protocol's names: the SDK's current one, and the original (older servers).
SUBPROTOCOLS = ["foxglove.sdk.v1", "foxglove.websocket.v1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def protobuf_fields(data: bytes) -> dict[int, list]:
    """Top-level fields of a protobuf message: ``{number: [value, ...]}``.

    Values are bytes (length-delimited) or ints (fixed-size numbers as unsigned).
    """
    fields: dict[int, list] = {}
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 2:
            size = varint()
            value, pos = data[pos:pos + size], pos + size
        elif wire == 1:  # fixed64
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        elif wire == 5:  # fixed32 (the image sizes are)
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def raw_image(payload: bytes) -> dict:
    """A ``foxglove.RawImage`` by field number.

    timestamp 1, width 2, height 3, encoding 4, step 5, data 6, frame_id 7.
    """
    f = protobuf_fields(payload)
    stamp = protobuf_fields(f[1][0]) if 1 in f else {}
    return {"width": f[2][0], "height": f[3][0], "encoding": f[4][0].decode(),
            "step": f[5][0], "data": f[6][0], "frame_id": f[7][0].decode(),
            "stamp_ns": stamp.get(1, [0])[0] * 10**9 + stamp.get(2, [0])[0]}


# --------------------------------------------------------------------------- live server


def _viewer(port: int, result: dict, stop: threading.Event) -> None:
    """A Foxglove viewer: advertise -> subscribe to every channel -> binary message frames."""
    deadline = time.monotonic() + 60
    while True:
        try:
            ws = connect(f"ws://127.0.0.1:{port}", subprotocols=SUBPROTOCOLS, max_size=None,
                         open_timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or stop.is_set():
                return
            time.sleep(0.05)
    with ws:
        result["subprotocol"] = ws.subprotocol
        channels: dict[int, dict] = {}
        while not channels:
            message = json.loads(ws.recv(timeout=10))
            if message["op"] == "advertise":
                channels = {c["id"]: c for c in message["channels"]}
        result["channels"] = channels
        ws.send(json.dumps({"op": "subscribe", "subscriptions": [
            {"id": 100 + n, "channelId": cid} for n, cid in enumerate(channels)]}))
        by_subscription = {100 + n: channels[cid]["topic"] for n, cid in enumerate(channels)}
        received = result.setdefault("messages", [])
        while not stop.is_set():
            try:
                frame = ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - the server stopped at the end of the run
                return
            if isinstance(frame, bytes) and frame[0] == 0x01:
                sub_id, log_time = struct.unpack_from("<IQ", frame, 1)
                received.append((by_subscription[sub_id], log_time, frame[13:]))


@pytest.mark.timeout(180)
def test_a_foxglove_viewer_receives_depth_frames_from_a_live_run(cheap, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", 75, (64, 48), audio=False)
    port = _free_port()
    result: dict = {}
    stop = threading.Event()
    viewer = threading.Thread(target=_viewer, args=(port, result, stop), daemon=True)
    viewer.start()
    try:
        code = main(["live", "--file", str(clip), "--realtime", "--no-window", "--pointcloud",
                     "--foxglove", f"127.0.0.1:{port}", "--fov", "80"])
    finally:
        stop.set()
        viewer.join(10)
    assert code == 0
    out = capsys.readouterr().out
    assert f"foxglove: ws://127.0.0.1:{port}" in out
    assert result["subprotocol"] in SUBPROTOCOLS
    advertised = {c["topic"]: (c["schemaName"], c["encoding"]) for c in
                  result["channels"].values()}
    assert advertised == {t: (s, "protobuf") for t, s in SCHEMAS.items()}
    depth = [(t, p) for topic, t, p in result["messages"] if topic.endswith("depth/image_raw")]
    assert len(depth) >= 5, out
    times = [t for t, _ in depth]
    assert times == sorted(times) and abs(times[-1] / 1e9 - time.time()) < 60  # capture clock
    for log_time, payload in depth:
        image = raw_image(payload)
        assert (image["width"], image["height"], image["encoding"]) == (64, 48, "32FC1")
        assert image["step"] == 256 and image["frame_id"] == "camera"
        assert image["stamp_ns"] == log_time
        values = np.frombuffer(image["data"], "<f4")
        assert values.size == 64 * 48 and np.all(np.isfinite(values))
    topics = {topic for topic, _, _ in result["messages"]}
    assert topics == set(SCHEMAS)
    sent = int(out.split(f"foxglove ws://127.0.0.1:{port}: ")[1].split(" sent")[0])
    assert sent >= len(depth)


def _stalled_viewer(port: int) -> socket.socket:
    """Connect, subscribe to everything, and then never read again (a frozen viewer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    deadline = time.monotonic() + 30
    while True:
        try:
            sock.connect(("127.0.0.1", port))
            break
        except OSError:
            assert time.monotonic() < deadline, "the Foxglove server did not start"
            time.sleep(0.05)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOLS[0]}\r\n"
                  "\r\n").encode())
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(4096)
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    assert b" 101 " in head.split(b"\r\n")[0]
    channels = None
    while channels is None:  # server frames: unmasked; read until the advertise message
        while len(buffer) < 2 or len(buffer) < _frame_size(buffer):
            buffer += sock.recv(65536)
        size, start = _frame_size(buffer), _payload_start(buffer)
        payload, buffer = buffer[start:size], buffer[size:]
        message = json.loads(payload)
        if message["op"] == "advertise":
            channels = [c["id"] for c in message["channels"]]
    text = json.dumps({"op": "subscribe", "subscriptions": [
        {"id": n, "channelId": cid} for n, cid in enumerate(channels)]}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    assert len(text) < 65536
    sock.sendall(bytes([0x81, 0x80 | 126]) + struct.pack(">H", len(text)) + mask + masked)
    return sock


def _payload_start(buffer: bytes) -> int:
    length = buffer[1] & 0x7F
    return 2 + {126: 2, 127: 8}.get(length, 0)


def _frame_size(buffer: bytes) -> int:
    length = buffer[1] & 0x7F
    if length == 126:
        if len(buffer) < 4:
            return 4
        length = struct.unpack_from(">H", buffer, 2)[0]
    elif length == 127:
        if len(buffer) < 10:
            return 10
        length = struct.unpack_from(">Q", buffer, 2)[0]
    return _payload_start(buffer) + length


@pytest.mark.timeout(180)
def test_a_viewer_that_never_reads_does_not_slow_the_pipeline(cheap, tmp_path, capsys):
    # 320x240 frames with point clouds: far more than the socket buffers hold.
    frames = 60
    clip = make_clip(tmp_path / "in.mp4", frames, (320, 240), audio=False)
    port = _free_port()
    holder: dict = {}

    def stall() -> None:
        holder["socket"] = _stalled_viewer(port)

    staller = threading.Thread(target=stall, daemon=True)
    staller.start()
    start = time.monotonic()
    try:
        code = main(["live", "--file", str(clip), "--realtime", "--no-window", "--pointcloud",
                     "--point-step", "1", "--foxglove", f"127.0.0.1:{port}",
                     "--stats", str(tmp_path / "stats.json")])
        elapsed = time.monotonic() - start
    finally:
        staller.join(10)
        if "socket" in holder:
            holder["socket"].close()
    assert code == 0
    assert "socket" in holder, "the stalled viewer never subscribed"
    stats = json.loads((tmp_path / "stats.json").read_text())
    duration = frames / float(NTSC)
    # The run keeps the clip's own pace: it is not held back by the viewer.
    assert elapsed < duration + 4.0, (elapsed, stats)
    assert stats["frames_written"] >= 0.8 * frames, stats
    out = capsys.readouterr().out
    counts = out.split(f"foxglove ws://127.0.0.1:{port}: ")[1]
    sent = int(counts.split(" sent")[0])
    # depth 300 KB + cloud 1.2 MB per frame went to a viewer that read none of it
    assert sent * 1.5e6 > 8e6, out


def test_a_busy_port_is_a_usage_error(cheap, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", 2, (64, 48))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["convert", str(clip), "--foxglove", f"127.0.0.1:{port}", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot start the Foxglove server" in err[0]


@pytest.mark.parametrize("text, expected", [
    ("8765", ("127.0.0.1", 8765)),
    ("0", ("127.0.0.1", 0)),
    ("0.0.0.0:9000", ("0.0.0.0", 9000)),
    ("[::1]:8765", ("::1", 8765)),
    ("localhost:1", ("localhost", 1)),
])
def test_host_and_port(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["", "host:", ":80", "99999", "a:b", "1.2.3.4:65536"])
def test_bad_host_and_port(text):
    from stream.core.errors import ConfigError

    with pytest.raises(ConfigError, match="PORT"):
        parse_host_port(text)


def test_only_loopback_hosts_are_private():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.org"]))


# --------------------------------------------------------------------------- MCAP


def test_mcap_records_every_frame_on_the_foxglove_channels(cheap, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 12, (64, 48))
    path = tmp_path / "run.mcap"
    assert main(["convert", str(clip), "--mcap", str(path), "--pointcloud", "--raw",
                 str(tmp_path / "raw"), "--raw-format", "npy", "--no-progress"]) == 0
    assert not list(tmp_path.glob("*.part"))
    video = read_video(clip)
    stamps = [round(Fraction(p) * video["time_base"] * 10**9) for p in video["pts"]]
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        channels = {c.id: c for c in summary.channels.values()}
        assert {c.topic: summary.schemas[c.schema_id].name for c in channels.values()} == SCHEMAS
        assert {c.message_encoding for c in channels.values()} == {"protobuf"}
        counts = {channels[i].topic: n
                  for i, n in summary.statistics.channel_message_counts.items()}
        assert counts == {topic: 12 for topic in SCHEMAS}
        depth = []
        clouds = []
        for _, channel, message in reader.iter_messages():
            if channel.topic.endswith("depth/image_raw"):
                depth.append((message.log_time, raw_image(message.data)))
            elif channel.topic.endswith("depth/points"):
                clouds.append(protobuf_fields(message.data))
        metadata = [m.name for m in reader.iter_metadata()]
    assert "depthstream" in metadata
    assert [t for t, _ in depth] == stamps
    for k, (log_time, image) in enumerate(depth):
        assert image["stamp_ns"] == log_time
        raw = np.load(tmp_path / "raw" / f"depth_{k:06d}.npy")
        assert np.array_equal(np.frombuffer(image["data"], "<f4").reshape(48, 64), raw)
    # PointCloud: frame_id 2, point_stride 4, fields 5, data 6; relative without known points
    assert clouds[0][2][0] == b"camera_relative"
    assert clouds[0][4][0] == 16 and len(clouds[0][5]) == 7
    assert len(clouds[0][6][0]) == 12 * 16 * 16


def test_existing_mcap_is_kept_unless_overwrite(cheap, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", 2, (64, 48))
    path = tmp_path / "run.mcap"
    path.write_bytes(b"mine")
    assert main(["convert", str(clip), "--mcap", str(path), "--no-progress"]) == 2
    assert "exists" in capsys.readouterr().err and path.read_bytes() == b"mine"
    assert main(["convert", str(clip), "--mcap", str(path), "--overwrite", "--no-progress"]) == 0
    assert path.read_bytes()[:8] == b"\x89MCAP0\r\n"


def test_pointcloud_needs_an_output(cheap, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", 2, (64, 48))
    assert main(["convert", str(clip), "-o", str(tmp_path / "o.mp4"), "--pointcloud",
                 "--no-progress"]) == 2
    assert "--pointcloud goes with" in capsys.readouterr().err
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["in.mp4"]
