"""Weights: path, env, cache, a real download from 127.0.0.1, and one-line errors."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from stream.core.errors import WeightsError
from stream.models import weights


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving files from a folder; yields (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
    thread.join(5)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_explicit_path(weights_file: Path, state_dict: dict) -> None:
    assert _same(weights.load_state_dict(weights_file), state_dict)


def test_env_path(weights_file: Path, state_dict: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(weights_file))
    assert weights.resolve_path() == weights_file
    assert _same(weights.load_state_dict(), state_dict)


def test_cache_is_used_without_download(weights_file: Path, state_dict: dict) -> None:
    cached = weights.cache_path()
    assert cached.name == "midas_v21_small_256.pt" and cached.parent.name == "checkpoints"
    assert str(cached).startswith(os.environ["TORCH_HOME"])
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights_file.read_bytes())
    # DEPTHSTREAM_WEIGHTS_URL points at a closed port: a download attempt would fail
    assert _same(weights.load_state_dict(), state_dict)


def test_real_download_into_cache(http_root: tuple[str, Path], weights_file: Path,
                                  state_dict: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = http_root
    (root / "midas_v21_small_256.pt").write_bytes(weights_file.read_bytes())
    monkeypatch.setenv(weights.ENV_WEIGHTS_URL, f"{base}/midas_v21_small_256.pt")
    cached = weights.cache_path()
    assert not cached.exists()
    assert _same(weights.load_state_dict(progress=False), state_dict)
    assert cached.read_bytes() == weights_file.read_bytes()
    assert list(cached.parent.iterdir()) == [cached]  # no temporary file left behind


def test_default_url_is_the_official_release() -> None:
    assert weights.MIDAS_SMALL.url == (
        "https://github.com/isl-org/MiDaS/releases/download/v2_1/midas_v21_small_256.pt")


def test_download_failure_is_one_line_and_caches_nothing() -> None:
    with pytest.raises(WeightsError) as err:
        weights.load_state_dict(progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "--weights PATH" in message and "cannot download" in message
    assert not weights.cache_path().exists()


def test_bad_download_is_not_cached(http_root: tuple[str, Path],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = http_root
    (root / "x.pt").write_bytes(b"<html>not found</html>")
    monkeypatch.setenv(weights.ENV_WEIGHTS_URL, f"{base}/x.pt")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        weights.load_state_dict(progress=False)
    assert not weights.cache_path().exists()
    assert list(weights.cache_path().parent.iterdir()) == []


def _one_line_error(path: Path) -> str:
    with pytest.raises(WeightsError) as err:
        weights.load_state_dict(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_file(tmp_path: Path, weights_file: Path) -> None:
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(weights_file.read_bytes()[: weights_file.stat().st_size // 2])
    assert "not a readable PyTorch checkpoint" in _one_line_error(bad)


def test_missing_key(tmp_path: Path, state_dict: dict) -> None:
    bad = tmp_path / "missing.pt"
    partial = dict(state_dict)
    partial.pop("scratch.refinenet1.out_conv.weight")
    torch.save(partial, bad)
    message = _one_line_error(bad)
    assert "1 missing" in message and "scratch.refinenet1.out_conv.weight" in message


def test_wrong_shape_and_extra_key(tmp_path: Path, state_dict: dict) -> None:
    bad = tmp_path / "shape.pt"
    changed = dict(state_dict)
    changed["scratch.output_conv.4.bias"] = torch.zeros(2)
    changed["extra.weight"] = torch.zeros(1)
    torch.save(changed, bad)
    message = _one_line_error(bad)
    assert "wrong shape" in message and "1 unexpected (extra.weight)" in message


def test_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "notes.pt"
    bad.write_text("hello, these are not weights\n")
    assert "not a readable PyTorch checkpoint" in _one_line_error(bad)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "evil.pt"
    torch.save({"x": threading.Lock}, bad)  # weights_only=True must not unpickle classes
    _one_line_error(bad)


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in _one_line_error(tmp_path / "nope.pt")


def test_training_checkpoint_is_unwrapped(tmp_path: Path, state_dict: dict) -> None:
    path = tmp_path / "train.pt"
    torch.save({"model": state_dict, "optimizer": {}}, path)
    assert _same(weights.load_state_dict(path), state_dict)


def test_digest_changes_with_values(state_dict: dict) -> None:
    changed = dict(state_dict)
    changed["scratch.output_conv.4.bias"] = state_dict["scratch.output_conv.4.bias"] + 1
    assert weights.state_dict_digest(state_dict) == weights.state_dict_digest(dict(state_dict))
    assert weights.state_dict_digest(state_dict) != weights.state_dict_digest(changed)


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("random.pt", lambda p, sd: p.write_bytes(os.urandom(5000)), "not a PyTorch file"),
        ("html.pt", lambda p, sd: p.write_bytes(b"<html>404</html>"), "not a PyTorch file"),
        ("cut.pt", lambda p, sd: (torch.save(sd, p), p.write_bytes(p.read_bytes()[:9000])),
         "cut short or damaged"),
        ("evil.pt", lambda p, sd: torch.save({"x": threading.Lock}, p), "not loaded for safety"),
        ("empty.pt", lambda p, sd: p.write_bytes(b""), "is empty"),
    ],
)
def test_unreadable_files_get_one_complete_line_that_says_what_to_do(
    tmp_path: Path, state_dict: dict, name: str, make, says: str
) -> None:
    bad = tmp_path / name
    make(bad, state_dict)
    message = _one_line_error(bad)
    assert says in message
    # what to do, in full (torch's own text is cut mid-word or is a history lesson)
    assert message.endswith(f"(or set {weights.ENV_WEIGHTS}=PATH)")
    for noise in ("weights_only", "miniz", "PyTorch 2.6", "\x1b["):
        assert noise not in message
