"""Receive the depth frames that ``depthstream live|convert --zmq ADDR`` publishes.

Needs only pyzmq and numpy (and OpenCV for ``--show``), so it runs on any machine that can
reach the publisher. Each message: a JSON header, the depth (relative inverse depth,
larger = nearer, for ``midas-small`` and ``dav2-small``; metres for the ``dav2-metric``
models), and with ``--zmq-jpeg`` a JPEG of the colour frame.

Usage:
    depthstream live --camera 0 --zmq tcp://0.0.0.0:5555   # on the camera's machine
    python samples/zmq_subscriber.py tcp://HOST:5555 [--show] [--count N]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import zmq

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("address", nargs="?", default="tcp://127.0.0.1:5555")
parser.add_argument("--show", action="store_true", help="show depth (and colour) in a window")
parser.add_argument("--count", type=int, default=0, help="stop after N frames (0: never)")
args = parser.parse_args()

sub = zmq.Context().socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"")  # every message
sub.setsockopt(zmq.RCVHWM, 2)  # a slow reader gets fresh frames, not a backlog
sub.connect(args.address)
print(f"listening on {args.address}", flush=True)

received = 0
while not args.count or received < args.count:
    parts = sub.recv_multipart()
    header = json.loads(parts[0])
    h, w = header["height"], header["width"]
    dtype = "<f2" if header["dtype"] == "float16" else "<f4"
    depth = np.frombuffer(parts[1], dtype).reshape(h, w).astype(np.float32)
    received += 1
    print(f"seq {header['seq']:5d}  frame {header['index']:5d}  t={header['timestamp']:8.3f} s  "
          f"{w}x{h} {header['scale']:8s}  centre {depth[h // 2, w // 2]:.4g}  "
          f"range {header['lo']:.4g}..{header['hi']:.4g}", flush=True)
    if args.show:
        import cv2

        span = max(header["hi"] - header["lo"], 1e-6)
        grey = np.clip((depth - header["lo"]) * (255 / span), 0, 255).astype(np.uint8)
        cv2.imshow("depth (near = bright)", cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO))
        if len(parts) == 3:
            cv2.imshow("colour", cv2.imdecode(np.frombuffer(parts[2], np.uint8), 1))
        if cv2.waitKey(1) in (27, ord("q")):
            break
sub.close(linger=0)
