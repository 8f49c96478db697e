"""Read back a ROS 2 bag that ``depthstream convert|live --rosbag DIR`` wrote, without ROS.

Needs only ``rosbags`` and numpy (both installed with depthstream). Prints each depth
image's stamp and range, the camera intrinsics once, and with ``--points`` the extent of
the point clouds (``--pointcloud``). It reads the ``32FC1`` depth topic and, for
``--rosbag-depth compressedDepth``, the ``compressedDepth`` topic. Depth is relative
inverse depth (larger = nearer, not metres) for ``midas-small`` and ``dav2-small``, and
metres for the ``dav2-metric`` models (the bag's ``metadata.yaml`` says which);
point clouds are in metres for a metric model or when the run had ``--known-distance``
points (their ``frame_id`` ends in ``_relative`` otherwise).

Usage:
    depthstream convert samples/clip.mp4 --rosbag clip_bag --pointcloud
    python samples/read_rosbag.py clip_bag [--points] [--topic-prefix /depthstream]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("bag", help="the bag folder")
parser.add_argument("--topic-prefix", default="/depthstream")
parser.add_argument("--points", action="store_true", help="also read the point clouds")
args = parser.parse_args()

store = get_typestore(Stores.ROS2_HUMBLE)
depth_topic = f"{args.topic_prefix}/depth/image_raw"
compressed_topic = f"{depth_topic}/compressedDepth"
metres = "metres (REP 118)" in (Path(args.bag) / "metadata.yaml").read_text()
unit = "metres" if metres else "relative inverse depth"
info_topic = f"{args.topic_prefix}/depth/camera_info"
points_topic = f"{args.topic_prefix}/depth/points"

with Reader(args.bag) as bag:
    print(f"{bag.message_count} messages, {bag.duration / 1e9:.3f} s")
    for connection in bag.connections:
        print(f"  {connection.topic}  {connection.msgtype}  ({connection.msgcount})")
    wanted = [c for c in bag.connections
              if c.topic in (depth_topic, compressed_topic, info_topic)
              or (args.points and c.topic == points_topic)]
    shown_info = False
    for connection, _, raw in bag.messages(connections=wanted):
        msg = store.deserialize_cdr(raw, connection.msgtype)
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec / 1e9
        if connection.topic == info_topic:
            if not shown_info:
                fx, _, cx, _, fy, cy = msg.k[:6]
                print(f"camera {msg.width}x{msg.height}: fx={fx:.1f} fy={fy:.1f} "
                      f"cx={cx:.1f} cy={cy:.1f} ({msg.header.frame_id})")
                shown_info = True
        elif connection.topic == depth_topic:
            depth = np.frombuffer(msg.data.tobytes(), "<f4").reshape(msg.height, msg.width)
            print(f"t={stamp:12.6f} s  depth {msg.width}x{msg.height} {msg.encoding}  "
                  f"{unit} {np.nanmin(depth):.3f}..{np.nanmax(depth):.3f}")
        elif connection.topic == compressed_topic:
            from stream.robotics.rosbag import decode_compressed_depth

            depth = decode_compressed_depth(msg.format, msg.data)
            if depth.dtype == np.uint16:  # 16UC1: millimetres, 0 = no depth
                depth = np.where(depth > 0, depth / 1000.0, np.nan)
            print(f"t={stamp:12.6f} s  depth {depth.shape[1]}x{depth.shape[0]} "
                  f"{msg.format}  {unit} {np.nanmin(depth):.3f}..{np.nanmax(depth):.3f}")
        else:
            points = np.frombuffer(msg.data.tobytes(), np.uint8).reshape(-1, msg.point_step)
            xyz = points[:, :12].copy().view("<f4")
            units = "relative units" if msg.header.frame_id.endswith("_relative") else "metres"
            print(f"t={stamp:12.6f} s  {len(xyz)} points, z {xyz[:, 2].min():.2f}.."
                  f"{xyz[:, 2].max():.2f} {units}")
