"""``--rosbag``: ROS 2 bags read back with ``rosbags`` (its reader and typestore).

The network is the cheap test double (``support.fakes``); the bags are what a user gets.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from support.clips import NTSC, make_clip, mux_frames, pattern, read_video
from support.fakes import CheapBackend, cheap_estimator

from stream.api import DepthStream
from stream.cli import main
from stream.core.settings import RobotSettings
from stream.engines.estimator import DepthEstimator
from stream.models.registry import get_spec
from stream.robotics.rosbag import decode_compressed_depth

ROOT = Path(__file__).resolve().parents[2]
TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """``{topic: [(bag timestamp ns, message), ...]}`` of a bag, with each topic's type."""
    messages: dict[str, list[tuple[int, object]]] = {}
    with Reader(path) as bag:
        for connection in bag.connections:
            messages.setdefault(connection.topic, [])
        for connection, stamp, raw in bag.messages():
            msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
            messages[connection.topic].append((stamp, msg))
    return messages


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _types(path: Path) -> dict[str, str]:
    with Reader(path) as bag:
        return {c.topic: c.msgtype for c in bag.connections}


# --------------------------------------------------------------------------- convert


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One conversion of a 30000/1001 fps clip to a bag with every option, plus raw npy."""
    tmp = tmp_path_factory.mktemp("rosbag")
    clip = make_clip(tmp / "in.mp4", 12, (64, 48), rate=NTSC)
    bag = tmp / "run_bag"
    patcher = pytest.MonkeyPatch()
    patcher.setattr("stream.engines.estimator.create_estimator", lambda *a, **k: cheap_estimator())
    try:
        code = main(["convert", str(clip), "--rosbag", str(bag), "--rosbag-colour",
                     "--pointcloud", "--point-step", "8", "--raw", str(tmp / "raw"),
                     "--raw-format", "npy", "--intrinsics", "70,72,31.5,20",
                     "--frame-id", "front_camera_optical", "--topic-prefix", "/robot/front",
                     "--no-progress"])
    finally:
        patcher.undo()
    assert code == 0
    return {"dir": tmp, "clip": clip, "bag": bag, "messages": read_bag(bag),
            "video": read_video(clip)}


def test_bag_has_the_topics_and_types_asked_for(converted):
    assert _types(converted["bag"]) == {
        "/robot/front/depth/image_raw": "sensor_msgs/msg/Image",
        "/robot/front/depth/camera_info": "sensor_msgs/msg/CameraInfo",
        "/robot/front/color/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
        "/robot/front/depth/colormap": "sensor_msgs/msg/Image",
        "/robot/front/depth/points": "sensor_msgs/msg/PointCloud2",
    }
    assert (converted["bag"] / "metadata.yaml").is_file()
    assert (converted["bag"] / "run_bag.mcap").is_file()  # MCAP storage by default
    assert not list(converted["dir"].glob("*.part"))


def test_one_32fc1_depth_image_per_frame_with_the_frames_depth(converted):
    images = converted["messages"]["/robot/front/depth/image_raw"]
    assert len(images) == 12
    for k, (_, msg) in enumerate(images):
        assert (msg.encoding, msg.width, msg.height, msg.step) == ("32FC1", 64, 48, 256)
        assert msg.is_bigendian == 0 and msg.header.frame_id == "front_camera_optical"
        depth = np.frombuffer(msg.data.tobytes(), "<f4").reshape(48, 64)
        raw = np.load(converted["dir"] / "raw" / f"depth_{k:06d}.npy")
        assert np.array_equal(depth, raw)


def test_stamps_follow_the_pts_exactly(converted):
    video = converted["video"]
    expected = [round(Fraction(p) * video["time_base"] * 1_000_000_000) for p in video["pts"]]
    for topic, messages in converted["messages"].items():
        stamps = [stamp_ns(msg) for _, msg in messages]
        assert stamps == expected, topic
        assert [t for t, _ in messages] == expected  # the bag's own timestamps too


def test_camera_info_holds_the_intrinsics(converted):
    infos = converted["messages"]["/robot/front/depth/camera_info"]
    assert len(infos) == 12
    msg = infos[0][1]
    assert (msg.width, msg.height, msg.distortion_model) == (64, 48, "plumb_bob")
    assert msg.k.tolist() == [70.0, 0.0, 31.5, 0.0, 72.0, 20.0, 0.0, 0.0, 1.0]
    assert msg.p.tolist() == [70.0, 0.0, 31.5, 0.0, 0.0, 72.0, 20.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert msg.d.tolist() == [0.0] * 5 and msg.header.frame_id == "front_camera_optical"


def test_colour_jpeg_and_colourised_depth(converted):
    import cv2

    jpegs = converted["messages"]["/robot/front/color/image_raw/compressed"]
    colours = converted["messages"]["/robot/front/depth/colormap"]
    assert len(jpegs) == len(colours) == 12
    for k, (_, msg) in enumerate(jpegs):
        assert msg.format == "jpeg"
        picture = cv2.imdecode(msg.data, cv2.IMREAD_COLOR)
        assert picture.shape == (48, 64, 3)
        # the input frame (through H.264 and JPEG): close to the clip's pattern
        assert np.abs(picture.astype(int) - pattern(k, (64, 48))).mean() < 20
    msg = colours[0][1]
    assert (msg.encoding, msg.step, len(msg.data)) == ("bgr8", 64 * 3, 64 * 48 * 3)


def test_point_clouds_are_organised_and_in_relative_units_without_known_distances(converted):
    clouds = converted["messages"]["/robot/front/depth/points"]
    assert len(clouds) == 12
    msg = clouds[0][1]
    assert (msg.height, msg.width, msg.point_step) == (6, 8, 16)  # 48/8 x 64/8
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7)]
    assert msg.header.frame_id == "front_camera_optical_relative"
    points = np.frombuffer(msg.data.tobytes(), np.uint8).reshape(6, 8, 16)
    xyz = points[:, :, :12].copy().view("<f4").reshape(6, 8, 3)
    assert np.all(np.isfinite(xyz)) and np.all(xyz[:, :, 2] > 0)


class _RampBackend(CheapBackend):
    """TEST DOUBLE: inverse depth rising left to right (the right side is nearer)."""

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        height, width = x.shape[2:]
        return np.tile(np.linspace(1.0, 3.0, width, dtype=np.float32), (height, 1))


def test_metric_points_with_known_distances(monkeypatch, tmp_path):
    monkeypatch.setattr("stream.engines.estimator.create_estimator",
                        lambda *a, **k: DepthEstimator(_RampBackend()))
    clip = make_clip(tmp_path / "in.mp4", 4, (64, 48))
    bag = tmp_path / "bag"
    assert main(["convert", str(clip), "--rosbag", str(bag), "--pointcloud",
                 "--known-distance", "8,4,2.5", "--known-distance", "32,60,1.0", "--fov", "90",
                 "--no-smooth", "--no-progress"]) == 0
    messages = read_bag(bag)
    info = messages["/depthstream/depth/camera_info"][0][1]
    assert info.k[0] == pytest.approx(32.0)  # 90 degrees across 64 pixels
    for _, msg in messages["/depthstream/depth/points"]:
        assert msg.header.frame_id == "camera"  # metric: the camera's own frame
        xyz = np.frombuffer(msg.data.tobytes(), np.uint8).reshape(12, 16, 16)
        z = xyz[:, :, :12].copy().view("<f4").reshape(12, 16, 3)[:, :, 2]
        # the known pixels (on the step's grid) are at their distances: two points fit exactly
        assert z[8 // 4, 4 // 4] == pytest.approx(2.5, rel=1e-4)
        assert z[32 // 4, 60 // 4] == pytest.approx(1.0, rel=1e-4)
        assert 0.0 < z.min() and z.max() <= 100.0


def test_sqlite3_storage(cheap, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 5, (64, 48))
    bag = tmp_path / "bag"
    assert main(["convert", str(clip), "--rosbag", str(bag), "--rosbag-storage", "sqlite3",
                 "--no-progress"]) == 0
    assert (bag / "bag.db3").is_file()
    assert [len(v) for v in read_bag(bag).values()] == [5, 5, 5]


def _clip_with_creation_time(path: Path, when: str, frames: int = 5) -> Path:
    with av.open(str(path), "w") as container:
        container.metadata["creation_time"] = when
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        mux_frames(container, stream, (pattern(i, (64, 48)) for i in range(frames)))
    return path


def test_stamp_origin_unix_adds_the_files_start_time(cheap, tmp_path, capsys):
    clip = _clip_with_creation_time(tmp_path / "in.mp4", "2024-05-01T12:00:00.000000Z")
    start = datetime(2024, 5, 1, 12, tzinfo=timezone.utc).timestamp()
    assert main(["convert", str(clip), "--rosbag", str(tmp_path / "bag"),
                 "--stamp-origin", "unix", "--no-progress"]) == 0
    video = read_video(clip)
    expected = [round(start * 1e9) + round(Fraction(p) * video["time_base"] * 10**9)
                for p in video["pts"]]
    images = read_bag(tmp_path / "bag")["/depthstream/depth/image_raw"]
    assert [stamp_ns(m) for _, m in images] == expected
    # a file without a start time: stamps from the video's start, and a warning
    plain = make_clip(tmp_path / "plain.mp4", 3, (64, 48), audio=False)
    assert main(["convert", str(plain), "--rosbag", str(tmp_path / "bag2"),
                 "--stamp-origin", "unix", "--no-progress"]) == 0
    assert "no recorded start time" in capsys.readouterr().err
    images = read_bag(tmp_path / "bag2")["/depthstream/depth/image_raw"]
    assert stamp_ns(images[0][1]) == 0


def test_existing_bag_is_kept_unless_overwrite(cheap, tmp_path, capsys):
    clip = make_clip(tmp_path / "in.mp4", 3, (64, 48))
    bag = tmp_path / "bag"
    assert main(["convert", str(clip), "--rosbag", str(bag), "--no-progress"]) == 0
    first = (bag / "metadata.yaml").read_text()
    assert main(["convert", str(clip), "--rosbag", str(bag), "--no-progress"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (bag / "metadata.yaml").read_text() == first
    assert main(["convert", str(clip), "--rosbag", str(bag), "--overwrite", "--fov", "90",
                 "--no-progress"]) == 0
    info = read_bag(bag)["/depthstream/depth/camera_info"][0][1]
    assert info.k[0] == pytest.approx(32.0)
    folder = tmp_path / "notabag"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert main(["convert", str(clip), "--rosbag", str(folder), "--overwrite",
                 "--no-progress"]) == 2
    assert (folder / "keep.txt").read_text() == "mine"
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("args, message", [
    (["--rosbag-colour"], "--rosbag-colour goes with --rosbag"),
    (["--rosbag-compression", "zstd"], "--rosbag-compression goes with --rosbag"),
    (["--rosbag-depth", "compressedDepth"], "--rosbag-depth goes with --rosbag"),
    (["--rosbag", "B", "--intrinsics", "50,50,64,10"], "outside the 64x48 picture"),
    (["--rosbag", "B", "--known-distance", "1,1,1", "--known-distance", "99,1,2"],
     "outside the 64x48 picture"),
    (["--rosbag", "B", "--topic-prefix", "depth"], "ROS name"),
])
def test_bad_options_are_usage_errors_before_anything_is_written(cheap, tmp_path, capsys, args,
                                                                  message):
    clip = make_clip(tmp_path / "in.mp4", 2, (64, 48))
    args = [str(tmp_path / a) if a == "B" else a for a in args]
    assert main(["convert", str(clip), *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


# --------------------------------------------------------------------------- compact bags

VARIANTS = list(itertools.product(("mcap", "sqlite3"), ("none", "zstd"),
                                  ("raw", "compressedDepth")))
FRAMES = 10


def plugin_decode(msg) -> np.ndarray:
    """compressed_depth_image_transport's decoding, written from its format alone."""
    raw = msg.data.tobytes()
    fmt, a, b = struct.unpack_from("<iff", raw)
    assert fmt == 0  # INV_DEPTH
    import cv2

    q = cv2.imdecode(np.frombuffer(raw[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    assert q.dtype == np.uint16
    if msg.format.split(";")[0] == "16UC1":
        return q
    with np.errstate(divide="ignore"):
        depth = np.float32(a) / (q.astype(np.float32) - np.float32(b))
    depth[q == 0] = np.nan
    return depth


def bag_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """One clip converted to a bag of every storage, compression and depth transport."""
    tmp = tmp_path_factory.mktemp("variants")
    clip = make_clip(tmp / "in.mp4", FRAMES, (160, 120), audio=False)
    patcher = pytest.MonkeyPatch()
    patcher.setattr("stream.engines.estimator.create_estimator", lambda *a, **k: cheap_estimator())
    bags = {}
    try:
        for variant in VARIANTS:
            bags[variant] = tmp / "_".join(variant)
            code = main(["convert", str(clip), "--rosbag", str(bags[variant]),
                         "--rosbag-storage", variant[0], "--rosbag-compression", variant[1],
                         "--rosbag-depth", variant[2], "--pointcloud", "--raw",
                         str(tmp / f"raw_{bags[variant].name}"), "--raw-format", "npy",
                         "--no-progress"])
            assert code == 0, variant
    finally:
        patcher.undo()
    return tmp, bags


@pytest.mark.parametrize("variant", VARIANTS, ids="-".join)
def test_every_variant_reads_back(variants, variant):
    tmp, bags = variants
    storage, compression, transport = variant
    bag = bags[variant]
    messages = read_bag(bag)
    depth_topic = ("/depthstream/depth/image_raw" if transport == "raw"
                   else "/depthstream/depth/image_raw/compressedDepth")
    assert set(messages) == {depth_topic, "/depthstream/depth/camera_info",
                             "/depthstream/color/image_raw/compressed",
                             "/depthstream/depth/points"}
    assert all(len(v) == FRAMES for v in messages.values())
    with Reader(bag) as reader:
        per_message = storage == "sqlite3" and compression == "zstd"
        assert (reader.compression_mode or None) == ("message" if per_message else None)
        assert (reader.compression_format or None) == ("zstd" if per_message else None)
    if storage == "mcap":  # zstd chunks: their frames' magic number is in the file
        data = (bag / f"{bag.name}.mcap").read_bytes()
        assert (b"\x28\xb5\x2f\xfd" in data) == (compression == "zstd")
    for k, (_, msg) in enumerate(messages[depth_topic]):
        original = np.load(tmp / f"raw_{bag.name}" / f"depth_{k:06d}.npy")
        if transport == "raw":
            assert msg.encoding == "32FC1"
            depth = np.frombuffer(msg.data.tobytes(), "<f4").reshape(120, 160)
            assert np.array_equal(depth, original)
            continue
        assert msg.__msgtype__ == "sensor_msgs/msg/CompressedImage"
        assert msg.format == "32FC1; compressedDepth png"
        depth = plugin_decode(msg)
        np.testing.assert_array_equal(depth, decode_compressed_depth(msg.format, msg.data))
        # the plugin's quantization: one step at value v is v^2 / a (a fitted to the frame)
        hi = float(original.max())
        lo = max(float(original.min()), hi / 1000)
        assert original.min() > 0 and np.all(np.isfinite(depth))
        half_step = 0.5 * original / (65534 / (1 / lo - 1 / hi)) * original
        assert np.all(np.abs(depth - original) <= half_step * 1.001 + 1e-6 * hi)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_compression_and_compressed_depth_shrink_the_bag(variants, storage):
    _, bags = variants
    size = {(c, d): bag_bytes(bags[(storage, c, d)]) for _, c, d in VARIANTS
            if _ == storage}
    plain = size[("none", "raw")]
    assert size[("zstd", "raw")] < 0.9 * plain
    assert size[("none", "compressedDepth")] < 0.8 * plain
    assert size[("zstd", "compressedDepth")] < min(size[("zstd", "raw")],
                                                   size[("none", "compressedDepth")])


class _MetresBackend(CheapBackend):
    """TEST DOUBLE: a metric network (its spec says metres), 0.5 m left to 80 m right."""

    spec = get_spec("dav2-metric-indoor")

    def infer(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        height, width = x.shape[2:]
        return np.tile(np.linspace(0.5, 80.0, width, dtype=np.float32), (height, 1))


def test_metric_compressed_depth_is_16uc1_millimetres(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 3, (64, 48), audio=False)
    robot = RobotSettings(rosbag_dir=tmp_path / "bag", rosbag_depth="compressedDepth")
    with DepthStream(clip, estimator=DepthEstimator(_MetresBackend()), robot=robot) as stream:
        frames = list(stream)
    images = read_bag(tmp_path / "bag")["/depthstream/depth/image_raw/compressedDepth"]
    assert len(images) == len(frames) == 3
    for frame, (_, msg) in zip(frames, images):
        assert msg.format == "16UC1; compressedDepth png"
        mm = plugin_decode(msg)
        assert mm.dtype == np.uint16 and mm.shape == frame.depth.shape
        inside = frame.depth <= 65.535
        assert inside.any() and not inside.all()
        assert np.all(np.abs(mm[inside] / 1000 - frame.depth[inside]) <= 0.0005 + 1e-6)
        assert np.all(mm[~inside] == 0)  # beyond 16 bits of millimetres: unknown


def test_decoding_refuses_what_is_not_compressed_depth():
    with pytest.raises(ValueError, match="not a compressedDepth"):
        decode_compressed_depth("jpeg", b"\xff\xd8" * 20)


# --------------------------------------------------------------------------- live and API


def test_live_frames_are_stamped_with_the_capture_clock(cheap, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 15, (64, 48), audio=False)
    before = time.time()
    assert main(["live", "--file", str(clip), "--realtime", "--no-window",
                 "--rosbag", str(tmp_path / "bag")]) == 0
    after = time.time()
    images = read_bag(tmp_path / "bag")["/depthstream/depth/image_raw"]
    stamps = [stamp_ns(m) / 1e9 for _, m in images]
    assert len(stamps) >= 5
    assert before - 1 <= stamps[0] and stamps[-1] <= after + 1
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] > 0.2  # played at 30 fps


def test_depth_stream_writes_a_bag_and_gives_points(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 6, (64, 48))
    robot = RobotSettings(rosbag_dir=tmp_path / "bag", fov_deg=75)
    with DepthStream(clip, estimator=cheap_estimator(), robot=robot) as stream:
        frames = list(stream)
    assert frames[0].camera.fov_deg == pytest.approx(75)
    assert frames[0].points(4).shape == (12, 16)
    images = read_bag(tmp_path / "bag")["/depthstream/depth/image_raw"]
    assert len(images) == 6
    depth = np.frombuffer(images[-1][1].data.tobytes(), "<f4").reshape(48, 64)
    assert np.array_equal(depth, frames[-1].depth)


# --------------------------------------------------------------------------- SIGTERM

_CHILD = """
import signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
from support.fakes import CheapBackend, cheap_estimator
import stream.engines.estimator
stream.engines.estimator.create_estimator = lambda *a, **k: cheap_estimator(delay_s=0.03)
from stream.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_bag_is_finished_and_readable_after_sigterm(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", 300, (64, 48), audio=False)
    bag = tmp_path / "bag"
    code = _CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "convert", str(clip), "--rosbag", str(bag)],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    done = 0
    while done < 10 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        counts = re.findall(r"(\d+)/300", "".join(err))
        done = int(counts[-1]) if counts else 0
    assert done >= 10, "".join(err)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    reader.join(5)
    assert rc == 143, "".join(err)
    messages = read_bag(bag)
    frames = len(messages["/depthstream/depth/image_raw"])
    assert 10 <= frames < 300
    assert all(len(v) == frames for v in messages.values())
    assert not list(tmp_path.glob("*.part"))


def test_the_sample_reads_the_bag_back(converted):
    result = subprocess.run(
        [sys.executable, str(ROOT / "samples" / "read_rosbag.py"), str(converted["bag"]),
         "--topic-prefix", "/robot/front", "--points"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(" depth 64x48 32FC1 " in line for line in lines) == 12
    assert sum("48 points" in line and "relative units" in line for line in lines) == 12
    assert "camera 64x48: fx=70.0 fy=72.0 cx=31.5 cy=20.0 (front_camera_optical)" in lines


def test_a_bag_killed_while_written_leaves_a_folder_the_sweep_removes(tmp_path: Path) -> None:
    # A bag is written in a temporary folder named as every temporary of depthstream, so
    # the next run's sweep removes it when its writer died (kill -9).
    import os
    import subprocess
    import sys

    from stream.core.files import part_name, remove_stale_parts

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    name = part_name(tmp_path / "run.bag").name.replace(f"-{os.getpid()}-", f"-{dead}-")
    stale = tmp_path / name
    (stale / "run.bag").mkdir(parents=True)
    remove_stale_parts(tmp_path)
    assert not stale.exists()
