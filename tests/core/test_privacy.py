"""No phoning home: depthstream's commands open no connection beyond loopback.

A child process installs a Python audit hook (``sys.addaudithook``) that records every
``socket.connect`` and ``socket.getaddrinfo``, then runs ``image`` (first start: the
network is converted, where OpenVINO's telemetry lives), ``image --precision int8``
(NNCF, which has telemetry of its own), ``convert``, ``live --file --no-window`` and
``serve`` (until it answers one request, then Ctrl+C). The child's home folder holds an
OpenVINO consent file that says "yes", and CI variables (which would mute the
telemetry by themselves) are removed: without :mod:`stream.core.privacy`, events would be
sent. The consent file must be left as it was (the user's global choice). Run without
:func:`~stream.core.privacy.disable_telemetry`, the first conversion alone records dozens of
look-ups of ``www.google-analytics.com``, each from a forked child (checked by hand when
this test was written).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.clips import make_clip

from stream.core.privacy import disable_telemetry, telemetry_disabled

ROOT = Path(__file__).resolve().parents[2]

RUNNER = r'''
import json, os, signal, socket, sys, threading, time, urllib.request
signal.signal(signal.SIGINT, signal.default_int_handler)

def is_loopback(host):
    if host is None or isinstance(host, (bytes, bytearray)):
        host = host.decode() if host else "localhost"
    return host in ("localhost", "::1", "") or host.startswith("127.") or host == "0.0.0.0"

def record(event, what):
    # Appended to a file, not kept in memory: OpenVINO's telemetry sends from a forked
    # child process, which inherits this hook but not a way back to our memory.
    with open(LOG, "a") as f:
        f.write(json.dumps([event, os.getpid(), what]) + "\n")

def hook(event, args):
    if event == "socket.getaddrinfo" and not is_loopback(args[0]):
        record(event, str(args[0]))
    elif event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and not is_loopback(address[0]):
            record(event, str(address))

sys.addaudithook(hook)
sys.path.insert(0, ROOT)
import stream.cli as cli
import stream.engines.quantize as q
q.DEFAULT_RECIPE = q.Recipe(calibration_frames=3, check_frames=1)
codes = {}

def run(name, args):
    try:
        codes[name] = cli.main(args + ["--weights", WEIGHTS])
    finally:
        with open(CODES, "w") as f:
            json.dump(codes, f)

run("image", ["image", PICTURE, "-o", "a.png"])
run("int8", ["image", PICTURE, "-o", "b.png", "--precision", "int8"])
run("convert", ["convert", CLIP, "-o", "c.mp4", "--no-progress"])
run("live", ["live", "--file", CLIP, "--no-window", "-o", "d.mp4"])

probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()

def poke():
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                codes["serve_http"] = r.status
            # written here: after a clean stop, `serve` ends the process at once
            with open(CODES, "w") as f:
                json.dump(codes, f)
            break
        except OSError:
            time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=poke, daemon=True).start()
run("serve", ["serve", "--port", str(port), "--data-dir", "server"])
'''


def test_disable_telemetry_blocks_the_package_in_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "openvino_telemetry", raising=False)
    disable_telemetry()
    assert telemetry_disabled()
    with pytest.raises(ImportError):
        import openvino_telemetry  # noqa: F401
    disable_telemetry()  # idempotent
    assert sys.modules["openvino_telemetry"] is None


@pytest.mark.slow
def test_commands_open_no_connection_beyond_loopback(weights_file: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    consent = home / "intel" / "openvino_telemetry"
    consent.parent.mkdir(parents=True)
    consent.write_text("1")  # this user said yes to OpenVINO's telemetry, globally
    clip = make_clip(tmp_path / "in.mp4", 4, size_wh=(96, 64))
    runner = tmp_path / "runner.py"
    log = tmp_path / "connections.log"
    runner.write_text(f"ROOT = {str(ROOT)!r}\nWEIGHTS = {str(weights_file)!r}\n"
                      f"LOG = {str(log)!r}\nCODES = {str(tmp_path / 'codes.json')!r}\n"
                      f"PICTURE = {str(ROOT / 'samples' / 'coffee.jpg')!r}\n"
                      f"CLIP = {str(clip)!r}\n" + RUNNER)
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), DEPTHSTREAM_CACHE=str(tmp_path / "cache"),
               TORCH_HOME=str(tmp_path / "torch"))
    done = subprocess.run([sys.executable, str(runner)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads((tmp_path / "codes.json").read_text())
    assert {k: codes[k] for k in ("image", "int8", "convert", "live")} == dict.fromkeys(
        ("image", "int8", "convert", "live"), 0), done.stderr[-3000:]
    assert codes.get("serve_http") == 200  # and it stopped cleanly: returncode 0
    assert not log.exists(), log.read_text()[:2000]
    assert consent.read_text() == "1"  # the user's own setting, untouched
    assert sorted(p.name for p in consent.parent.iterdir()) == ["openvino_telemetry"]


def test_the_hook_sees_a_connection_attempt(tmp_path: Path) -> None:
    """The audit events the test above relies on fire for a plain lookup."""
    code = ("import sys, socket\nseen = []\n"
            "sys.addaudithook(lambda e, a: seen.append(e) if e.startswith('socket.') else None)\n"
            "try:\n    socket.getaddrinfo('example.invalid', 80)\nexcept OSError:\n    pass\n"
            "print(sorted(set(seen)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    seen = done.stdout.strip()
    assert "socket.getaddrinfo" in seen
    assert socket  # imported for the reader: the events come from this module
