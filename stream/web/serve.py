"""Serve: start the web UI from the command line's words and run it until told to stop.

Starts threads: the app's job lanes (and live pipeline, for viewers), and waitress's
request threads (:mod:`stream.web.httpd`), while :func:`serve` runs the accept loop on
the caller's thread. Touches files: reads the weights before anything listens; the
app keeps its jobs in the data folder.

SIGTERM and SIGINT (Ctrl-C) stop it cleanly: it stops accepting, running jobs fail
("server stopped", their partial files removed), live streams end, and :func:`serve`
returns within about 10 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError
from stream.engines.estimator import create_estimator
from stream.sources.capture import LiveSource, Source

from .app import DepthServer
from .auth import is_loopback, new_token
from .config import MB, ServerConfig
from .httpd import HttpServer

__all__ = ["default_data_dir", "serve"]

_TOKEN_ENV = "DEPTHSTREAM_TOKEN"


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


def _choose_token(host: str, token: str | None) -> tuple[str | None, bool]:
    """The token to use, and whether it was made up here (off this machine, none given)."""
    token = token or os.environ.get(_TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        return new_token(), True
    return token, False


@contextlib.contextmanager
def _stop_on_signals(httpd: HttpServer) -> Iterator[None]:
    """While serving, SIGTERM and SIGINT ask the server to stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, lambda *_: httpd.request_stop())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _config(data_dir: str | os.PathLike | None, max_image_mb: float, max_video_mb: float,
            max_data_mb: float, keep_hours: float | None, **limits: Any) -> ServerConfig:
    return ServerConfig(
        data_dir=Path(data_dir) if data_dir is not None else default_data_dir(),
        max_image_bytes=int(max_image_mb * MB), max_video_bytes=int(max_video_mb * MB),
        max_data_bytes=int(max_data_mb * MB),
        keep_s=keep_hours * 3600.0 if keep_hours else None, **limits)


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
    *,
    precision: str = "auto",
    token: str | None = None,
    max_data_mb: float = 2000,
    keep_hours: float | None = 168,
    **limits: Any,
) -> None:
    """Run the web UI until SIGTERM or SIGINT (then return, everything stopped).

    Args:
        host: address to bind; 127.0.0.1 keeps it on this machine; any other address
            without a token gets a new random one, printed with the URL.
        port: TCP port; 0 picks a free one (the URL printed says which).
        data_dir: folder for uploads and results (default :func:`default_data_dir`).
        weights: checkpoint path (default: ``$DEPTHSTREAM_WEIGHTS``, cache, download).
        backend: ``auto``, ``openvino`` or ``torch``.
        device: ``cpu`` or ``cuda``.
        camera: camera index for ``/live``.
        url: stream URL for ``/live`` (instead of ``camera``).
        max_image_mb: largest picture upload, in MB.
        max_video_mb: largest video upload, in MB.
        ready: called with the server's base URL (with ``?token=`` when it has one)
            once it listens (default: print it).
        precision: the network's precision for jobs (``auto``, ``fp32``, ``int8``);
            jobs may ask for another.
        token: the secret every request must carry (default ``$DEPTHSTREAM_TOKEN``).
        max_data_mb: the data folder's budget, in MB.
        keep_hours: finished jobs unused this long are deleted (``None`` or 0: never).
        **limits: more :class:`~stream.web.config.ServerConfig` fields
            (``max_image_mp``, ``max_video_wh``, ``max_video_s``, ``max_video_frames``,
            ``max_uploads``, ``max_viewers``, ``write_timeout_s``, ``max_jobs``...).

    Raises:
        WeightsError: missing or wrong weights (before anything listens).
        ConfigError: bad limits, backend, device or precision, or both camera and url.
        SourceError: the camera or URL gives no frames.
        SinkError: the address cannot be listened on (port in use, no such address).
    """
    from stream.models.weights import load_state_dict, state_dict_digest

    token, made_up = _choose_token(host, token)
    config = _config(data_dir, max_image_mb, max_video_mb, max_data_mb, keep_hours,
                     token=token, precision=precision, **limits)  # checked before the model
    live_source = _live_opener(camera, url)
    state = load_state_dict(weights)  # fail fast, in the caller's thread, before binding
    factory = functools.partial(create_estimator, backend=backend, device=device,
                                state_dict=state)
    config = dataclasses.replace(config, model_tag=f"{state_dict_digest(state)}-{backend}-"
                                                   f"{device}-{config.precision}")
    server = DepthServer(config, functools.partial(factory, precision=config.precision),
                         live_source, precision_factory=lambda p: factory(precision=p))
    try:
        server.start()
        httpd = HttpServer(server, host, port)
    except BaseException:
        server.close()
        raise
    # One line per request (the page polls several times a second) would bury the
    # warnings; failed jobs and live errors still show.
    logging.getLogger("waitress").setLevel(logging.ERROR)
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{httpd.port}/"
    address = base + (f"?token={token}" if token else "")
    if ready is None:
        live = f" (live view at {base}live)" if live_source is not None else ""
        auth = ("a new token: open this address once" if made_up else
                "token required" if token else "no token: this machine only")
        print(f"depthstream: serving on {address}{live}; {auth}; Ctrl-C stops", flush=True)
    else:
        ready(address)
    with _stop_on_signals(httpd):
        httpd.serve_forever()
    print("depthstream: stopped", flush=True)
