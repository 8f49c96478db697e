"""Serve: start the web UI from the command line's words and run it until interrupted.

Starts threads: the app's job worker (and live pipeline, for viewers), and werkzeug's
threaded HTTP server, one thread per request, while :func:`serve` runs the accept loop
on the caller's thread. Touches files: reads the weights before anything listens; the
app keeps its jobs in the data folder.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SinkError
from ..inference import create_estimator
from ..sources import LiveSource, Source
from .app import DepthServer, create_app

__all__ = ["default_data_dir", "serve"]


def default_data_dir() -> Path:
    """``$XDG_CACHE_HOME/depthstream/server`` (``~/.cache/depthstream/server``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "depthstream" / "server"


def _live_opener(camera: int | None, url: str | None) -> Callable[[], Source] | None:
    """What opens the live source, after checking it opens now (a usage error if not).

    Raises:
        ConfigError: both a camera and a URL.
        SourceError: the camera or URL gives no frames.
    """
    if camera is not None and url is not None:
        raise ConfigError("give --camera or --url, not both")
    if camera is not None:
        opener = functools.partial(LiveSource.from_camera, int(camera))
    elif url is not None:
        opener = functools.partial(LiveSource.from_url, str(url))
    else:
        return None
    opener().close()
    return opener


def _listen(host: str, port: int, app: Any) -> Any:
    """A threaded werkzeug server bound to ``host:port`` (not serving yet).

    Raises:
        SinkError: the address cannot be listened on (port in use, no such address).
    """
    from werkzeug.serving import make_server

    try:
        if port:  # werkzeug would print its own advice and exit: check first, say it once
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        return make_server(host, port, app, threaded=True)
    except (OSError, SystemExit) as exc:  # werkzeug prints and exits on a port in use
        reason = exc.strerror if isinstance(exc, OSError) else "the port is in use"
        raise SinkError(f"cannot listen on {host}:{port}: {reason}") from None


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    backend: str = "auto",
    device: str = "cpu",
    camera: int | None = None,
    url: str | None = None,
    max_image_mb: float = 20,
    max_video_mb: float = 500,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run the web UI until interrupted (Ctrl-C raises ``KeyboardInterrupt`` after cleanup).

    Args:
        host: address to bind; 127.0.0.1 keeps it on this machine (there is no
            authentication), 0.0.0.0 opens it to the network.
        port: TCP port; 0 picks a free one (the URL printed says which).
        data_dir: folder for uploads and results (default :func:`default_data_dir`).
        weights: checkpoint path (default: ``$DEPTHSTREAM_WEIGHTS``, cache, download).
        backend: ``auto``, ``openvino`` or ``torch``.
        device: ``cpu`` or ``cuda``.
        camera: camera index for ``/live``.
        url: stream URL for ``/live`` (instead of ``camera``).
        max_image_mb: largest picture upload, in MB.
        max_video_mb: largest video upload, in MB.
        ready: called with the server's base URL once it listens (default: print it).

    Raises:
        WeightsError: missing or wrong weights (before anything listens).
        ConfigError: bad limits, backend or device, or both camera and url.
        SourceError: the camera or URL gives no frames.
        SinkError: the address cannot be listened on (port in use, no such address).
    """
    from ..weights import load_state_dict, state_dict_digest

    live_source = _live_opener(camera, url)
    state = load_state_dict(weights)  # fail fast, in the caller's thread, before binding
    factory = functools.partial(create_estimator, backend=backend, device=device,
                                state_dict=state)
    app = create_app(data_dir if data_dir is not None else default_data_dir(), factory,
                     max_image_mb=max_image_mb, max_video_mb=max_video_mb,
                     model_tag=f"{state_dict_digest(state)}-{backend}-{device}",
                     live_source=live_source)
    server: DepthServer = app.extensions["depthstream"]
    try:
        httpd = _listen(host, port, app)
    except SinkError:
        server.close()
        raise
    # One line per request (the page polls several times a second) would bury the
    # warnings; failed jobs and live errors still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{httpd.server_port}"
    if ready is None:
        live = f", live view at {base}/live" if live_source is not None else ""
        print(f"depthstream: serving on {base}/{live} (no authentication; Ctrl-C stops)",
              flush=True)
    else:
        ready(base)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
        server.close()
