"""Config: the web server's one settings record (folder, limits, retention, token, names).

Starts no threads and touches no files: :class:`ServerConfig` only holds and checks
values, so a bad limit fails before the model loads or anything listens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from stream.core.errors import ConfigError
from stream.core.settings import Precision, parse_enum
from stream.models.registry import DEFAULT_MODEL, get_spec

__all__ = ["MB", "ServerConfig", "parse_size_wh"]

#: One megabyte as the size flags count it (10**6 bytes, as file managers show sizes).
MB = 1_000_000
_SIZE_WH = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
# A Host name as --allow-host takes it: a DNS name, an IPv4 or a bracketed IPv6 address, or *.
_HOST_NAME = re.compile(r"^(\*|[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?|\[[0-9a-f:.]+\])$")


def parse_size_wh(text: str) -> tuple[int, int]:
    """``"4096x2160"`` -> ``(4096, 2160)``.

    Raises:
        ConfigError: not two positive integers joined by ``x``.
    """
    match = _SIZE_WH.match(str(text))
    if match is None or 0 in (int(match.group(1)), int(match.group(2))):
        raise ConfigError(f"a size is WIDTHxHEIGHT in pixels, e.g. 4096x4096; got {text!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class ServerConfig:
    """Where the server keeps its files, what it accepts, and what it keeps.

    Every limit is checked twice: from what the upload's header says, before anything
    is decoded (413), and again while a video runs (a file that lied fails).

    Attributes:
        data_dir: folder for jobs (created if missing).
        max_image_bytes: largest picture upload.
        max_video_bytes: largest video upload.
        max_image_mp: most megapixels a picture may have.
        max_video_wh: largest video frame, width and height in pixels.
        max_video_s: longest video, in seconds.
        max_video_frames: most frames a video may have.
        max_uploads: large uploads (over 1 MB) received or checked at once; more are
            answered 503 with ``Retry-After``.
        max_queued: jobs waiting at most (each lane); more uploads are refused (503).
        max_data_bytes: the data folder's budget: least recently used finished jobs
            are deleted to stay under it.
        keep_s: finished jobs unused for this long are deleted; ``None``: no age limit.
        max_jobs: most job records kept (in memory and on disk).
        max_viewers: most live viewers at once; more are answered 503.
        write_timeout_s: a client that accepts no bytes for this long is disconnected.
        header_timeout_s: a connection must send a whole request head within this long
            of connecting (or of its previous answer); else it is closed (slow clients
            cannot hold connections).
        max_connections: connections open at once; when full, a new one replaces the
            oldest connection still waiting for its request head (of the client address
            that holds the most of those).
        token: the secret every request must carry; ``None``: no authentication.
        precision: the network precision every job runs at (the operator's choice; a
            job cannot ask for another).
        model: the network jobs run unless they ask for another (a ``--model`` name).
        model_tag: identifies the default model's weights and backend, so a cached
            result is only reused for the same model.
        host: the address the server listens on: the Host names it answers to are the
            loopback names, this address, and :attr:`allow_hosts`.
        allow_hosts: more Host names to answer to (a DNS name, a reverse proxy's name;
            ``*``: any).
    """

    data_dir: Path
    max_image_bytes: int = 20 * MB
    max_video_bytes: int = 500 * MB
    max_image_mp: float = 40.0
    max_video_wh: tuple[int, int] = (4096, 4096)
    max_video_s: float = 30 * 60.0
    max_video_frames: int = 108_000
    max_uploads: int = 4
    max_queued: int = 64
    max_data_bytes: int = 2_000 * MB
    keep_s: float | None = 7 * 24 * 3600.0
    max_jobs: int = 1000
    max_viewers: int = 8
    write_timeout_s: float = 10.0
    header_timeout_s: float = 5.0
    max_connections: int = 256
    token: str | None = field(default=None, repr=False)
    precision: str = "auto"
    model: str = DEFAULT_MODEL
    model_tag: str = ""
    host: str = "127.0.0.1"
    allow_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        positive = {
            "max_image_bytes": self.max_image_bytes, "max_video_bytes": self.max_video_bytes,
            "max_image_mp": self.max_image_mp, "max_video_s": self.max_video_s,
            "max_video_frames": self.max_video_frames, "max_uploads": self.max_uploads,
            "max_queued": self.max_queued, "max_data_bytes": self.max_data_bytes,
            "max_jobs": self.max_jobs, "max_viewers": self.max_viewers,
            "write_timeout_s": self.write_timeout_s, "header_timeout_s": self.header_timeout_s,
            "max_connections": self.max_connections,
        }
        for name, value in positive.items():
            if not value > 0:  # also refuses NaN
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.keep_s is not None and not self.keep_s > 0:
            raise ConfigError(f"keep_s must be positive or None, got {self.keep_s}")
        w, h = self.max_video_wh
        if int(w) <= 0 or int(h) <= 0:
            raise ConfigError(f"max_video_wh must be positive, got {self.max_video_wh}")
        object.__setattr__(self, "max_video_wh", (int(w), int(h)))
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("the token must have at least 8 characters")
        object.__setattr__(self, "precision",
                           parse_enum(Precision, self.precision, "precision").value)
        object.__setattr__(self, "model", get_spec(self.model).name)
        object.__setattr__(self, "allow_hosts", _host_names(self.allow_hosts))

    @property
    def max_upload_bytes(self) -> int:
        """The larger of the two size limits: the most any upload may be."""
        return max(self.max_image_bytes, self.max_video_bytes)

    @property
    def max_image_pixels(self) -> int:
        """:attr:`max_image_mp` in pixels."""
        return int(self.max_image_mp * 1_000_000)

    def limits(self) -> dict[str, object]:
        """What the page shows of the limits (JSON-ready)."""
        return {
            "max_image_bytes": self.max_image_bytes, "max_video_bytes": self.max_video_bytes,
            "max_image_mp": self.max_image_mp, "max_video_wh": list(self.max_video_wh),
            "max_video_s": self.max_video_s, "max_video_frames": self.max_video_frames,
        }


def _host_names(names: object) -> tuple[str, ...]:
    """``--allow-host`` names, lower case, without a trailing dot.

    Raises:
        ConfigError: a name with a scheme, a port, a path or spaces.
    """
    if isinstance(names, str):
        names = (names,)
    out = []
    for name in names or ():
        clean = str(name).strip().lower().rstrip(".")
        if not _HOST_NAME.match(clean):
            raise ConfigError(f"--allow-host takes a host name or address, without a scheme "
                              f"or port (e.g. depth.example.org), got {name!r}")
        out.append(clean)
    return tuple(out)
