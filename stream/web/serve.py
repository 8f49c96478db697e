"""Serve: start the web UI from the command line's words and run it until told to stop.

Starts threads: the app's job lanes (and live pipeline, for viewers), and waitress's
request threads (:mod:`stream.web.httpd`), while :func:`serve` runs the accept loop on
the caller's thread. Touches files: reads the default model's weights before anything
listens, and looks for another model's checkpoint (where the CLI looks, never
downloading) when a job asks for it; the app keeps its jobs in the data folder.

SIGTERM and SIGINT (Ctrl-C) stop it cleanly: it stops accepting, running jobs fail
("server stopped", their partial files removed), live streams end, and :func:`serve`
returns within about 10 s.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from stream.core.errors import ConfigError, WeightsError
from stream.engines.estimator import DepthEstimator, create_estimator
from stream.models.registry import get_spec
from stream.sources.capture import LiveSource, Source

from .app import DepthServer
from .auth import is_loopback, new_token
from .config import MB, ServerConfig
from .httpd import HttpServer
from .models import ModelChoice, ModelUnavailableError

__all__ = ["default_data_dir", "locate_checkpoint", "serve"]

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


def locate_checkpoint(name: str, backend: str = "auto", device: str = "cpu",
                      precision: str = "auto") -> str:
    """The cache tag of a model whose checkpoint is here (where the CLI looks; no download).

    Args:
        name: the ``--model`` name.
        backend: the server's engine (part of the tag).
        device: its device (part of the tag).
        precision: the server's precision; for ``int8`` the model's int8 version must
            have been made already (a job never starts a quantization).

    Raises:
        ModelUnavailableError: no checkpoint here, or no int8 model made for it.
    """
    from stream.models.weights import check_file, resolve_path

    ckpt = get_spec(name).checkpoint
    try:
        path = check_file(resolve_path(None, ckpt, download_missing=False), ckpt)
    except WeightsError:
        raise ModelUnavailableError(
            f"{name} is not available on this server: its checkpoint {ckpt.file_name} is "
            f"not here, and a job does not download it (the operator can fetch it once, "
            f"e.g. depthstream image --model {name} PICTURE)") from None
    if precision == "int8" and not _int8_made(path, name):
        raise ModelUnavailableError(
            f"{name} has no int8 model on this server, and a job does not make one (the "
            f"operator can, once: depthstream info --model {name} --precision int8)")
    stat = path.stat()
    return f"{name}-{stat.st_size}-{stat.st_mtime_ns}-{backend}-{device}-{precision}"


def _int8_made(path: Path, name: str) -> bool:
    from stream.engines.report import model_report

    try:
        return model_report(path, None, progress=False, model=name).get("int8_model") is not None
    except (WeightsError, ConfigError):
        return False


def _model_choice(model: str | None, weights: str | os.PathLike | None,
                  input_size: int | None, **engine: str) -> ModelChoice:
    """The models jobs may ask for, each built on first use.

    The default one comes from ``weights`` (read now), the others from their checkpoints
    where the CLI finds them (never downloaded).

    Raises:
        WeightsError: the default model's weights are missing or wrong.
    """
    from stream.models.weights import load_state_dict, resolve_path, state_dict_digest

    default = get_spec(model)
    state = load_state_dict(weights, default.checkpoint)  # fail fast, before binding
    sized = () if input_size is None else (f"side{input_size}",)  # not another size's results
    default_tag = "-".join((state_dict_digest(state), *engine.values(), *sized))

    def build(name: str) -> DepthEstimator:
        if name == default.name:
            return create_estimator(state_dict=state, model=name, input_size=input_size,
                                    **engine)
        path = resolve_path(None, get_spec(name).checkpoint, download_missing=False)
        return create_estimator(str(path), model=name, progress=False, **engine)

    def locate(name: str) -> str:
        return default_tag if name == default.name else locate_checkpoint(name, **engine)

    return ModelChoice(build, default.name, locate)


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
    model: str | None = None,
    input_size: int | None = None,
    allow_hosts: Iterable[str] = (),
    **limits: Any,
) -> None:
    """Run the web UI until SIGTERM or SIGINT (then return, everything stopped).

    Args:
        host: address to bind; 127.0.0.1 keeps it on this machine; any other address
            without a token gets a new random one, printed with the URL.
        port: TCP port; 0 picks a free one (the URL printed says which).
        data_dir: folder for uploads and results (default :func:`default_data_dir`).
        weights: the default model's checkpoint (default: ``$DEPTHSTREAM_WEIGHTS``,
            cache, download).
        backend: ``auto``, ``openvino`` or ``torch``.
        device: ``cpu`` or ``cuda``.
        camera: camera index for ``/live``.
        url: stream URL for ``/live`` (instead of ``camera``).
        max_image_mb: largest picture upload, in MB.
        max_video_mb: largest video upload, in MB.
        ready: called with the server's base URL (with ``?token=`` when it has one)
            once it listens (default: print it).
        precision: the network's precision for every job (``auto``, ``fp32``,
            ``int8``); jobs cannot ask for another.
        token: the secret every request must carry (default ``$DEPTHSTREAM_TOKEN``).
        max_data_mb: the data folder's budget, in MB.
        keep_hours: finished jobs unused this long are deleted (``None`` or 0: never).
        model: the default model (a ``--model`` name) and the live view's; jobs may
            ask for another whose checkpoint is here (never downloaded for a job).
        input_size: the default model's input side (``--input-size``).
        allow_hosts: more Host names to answer to (``--allow-host``) besides the
            loopback names and ``host``.
        **limits: more :class:`~stream.web.config.ServerConfig` fields
            (``max_image_mp``, ``max_video_wh``, ``max_video_s``, ``max_video_frames``,
            ``max_uploads``, ``max_viewers``, ``write_timeout_s``, ``header_timeout_s``,
            ``max_connections``, ``max_jobs``...).

    Raises:
        WeightsError: missing or wrong weights (before anything listens).
        ConfigError: bad limits, backend, device, precision, model or Host name, or both
            camera and url.
        SourceError: the camera or URL gives no frames.
        SinkError: the address cannot be listened on (port in use, no such address).
    """
    token, made_up = _choose_token(host, token)
    config = _config(data_dir, max_image_mb, max_video_mb, max_data_mb, keep_hours,
                     token=token, precision=precision, model=get_spec(model).name,
                     host=host, allow_hosts=tuple(allow_hosts), **limits)  # before the model
    live_source = _live_opener(camera, url)
    models = _model_choice(config.model, weights, input_size, backend=backend, device=device,
                           precision=config.precision)
    server = DepthServer(config, models, live_source)
    try:
        server.start()
        httpd = HttpServer(server, host, port)
    except BaseException:
        server.close()
        raise
    # One line per request (the page polls several times a second) would bury the
    # warnings; failed jobs and live errors still show.
    logging.getLogger("waitress").setLevel(logging.ERROR)
    _announce(host, httpd.port, token, made_up, live_source is not None, ready)
    with _stop_on_signals(httpd):
        httpd.serve_forever()
    print("depthstream: stopped", flush=True)


def _announce(host: str, port: int, token: str | None, made_up: bool, live: bool,
              ready: Callable[[str], None] | None) -> None:
    """Say where the server listens (or hand the address to ``ready``)."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/"
    address = base + (f"?token={token}" if token else "")
    if ready is not None:
        ready(address)
        return
    live_text = f" (live view at {base}live)" if live else ""
    auth = ("a new token: open this address once" if made_up else
            "token required" if token else "no token: this machine only")
    print(f"depthstream: serving on {address}{live_text}; {auth}; Ctrl-C stops", flush=True)
