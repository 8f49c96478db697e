"""CLI ``image`` command end to end with a synthetic checkpoint, and its error paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support.golden import DATA

from stream.cli import ExitStatus, main
from stream.depth.colormap import colorize, minmax
from stream.models.midas import MidasSmall
from stream.models.transforms import preprocess, resize_depth


@pytest.fixture(scope="module")
def model(state_dict: dict) -> MidasSmall:
    m = MidasSmall().eval()
    m.load_state_dict(state_dict, strict=True)
    return m


def _expected_depth(model: MidasSmall, bgr: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    with torch.inference_mode():
        return resize_depth(model(preprocess(rgb)), rgb.shape[:2])


def test_image_writes_the_colourised_depth(tmp_path: Path, weights_file: Path,
                                          model: MidasSmall) -> None:
    src = DATA / "case_16x9.png"
    out = tmp_path / "out.png"
    code = main(["image", str(src), "-o", str(out), "--weights", str(weights_file),
                 "--backend", "torch"])
    assert code == ExitStatus.OK
    written = cv2.imread(str(out))
    bgr = cv2.imread(str(src))
    assert written.shape == bgr.shape
    depth = _expected_depth(model, bgr)
    expected = colorize(depth, *minmax(depth))
    # equal up to float rounding of pixels that sit exactly on a colour boundary
    assert np.mean(written != expected) < 1e-3
    assert np.abs(written.astype(int) - expected).max() <= 8


def test_image_raw_and_side(tmp_path: Path, weights_file: Path, model: MidasSmall) -> None:
    src = tmp_path / "pic.jpg"
    cv2.imwrite(str(src), cv2.imread(str(DATA / "case_portrait.png")))
    out = tmp_path / "res"
    code = main(["image", str(src), "-o", str(out), "--weights", str(weights_file),
                 "--backend", "torch", "--raw", "--side"])
    assert code == ExitStatus.OK
    bgr = cv2.imread(str(src))
    side = cv2.imread(str(out / "pic_depth.png"))
    assert side.shape == (bgr.shape[0], bgr.shape[1] * 2, 3)
    assert np.abs(side[:, : bgr.shape[1]].astype(int) - bgr).max() == 0
    depth = np.load(out / "pic_depth16.npy")
    assert depth.dtype == np.float32 and depth.shape == bgr.shape[:2]
    expected = _expected_depth(model, bgr)
    # the backend may order memory differently (channels-last): the golden tolerance
    assert np.abs(depth - expected).max() <= 1e-4 * np.abs(expected).max()
    u16 = cv2.imread(str(out / "pic_depth16.png"), cv2.IMREAD_UNCHANGED)
    assert u16.dtype == np.uint16 and u16.min() == 0 and u16.max() == 65535
    lo, hi = minmax(depth)
    np.testing.assert_allclose(u16 / 65535.0, (depth - lo) / (hi - lo), atol=2e-5)


def test_folder_with_gray_and_alpha_pictures(tmp_path: Path, weights_file: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    bgr = cv2.resize(cv2.imread(str(DATA / "case_4x3.png")), (80, 60))
    cv2.imwrite(str(pics / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(pics / "alpha.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(pics / "c.webp"), bgr)
    cv2.imwrite(str(pics / "d.tiff"), bgr)
    cv2.imwrite(str(pics / "e.bmp"), bgr)
    (pics / "notes.txt").write_text("not a picture")
    out = tmp_path / "out"
    code = main(["image", str(pics), "-o", str(out), "--weights", str(weights_file),
                 "--backend", "torch"])
    assert code == ExitStatus.OK
    names = sorted(p.name for p in out.iterdir())
    assert names == ["alpha_depth.png", "c_depth.png", "d_depth.png", "e_depth.png",
                     "gray_depth.png"]
    for name in names:
        assert cv2.imread(str(out / name)).shape == (60, 80, 3)


def test_refuses_to_overwrite(tmp_path: Path, weights_file: Path,
                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    args = ["image", str(DATA / "case_4x3.png"), "-o", str(out), "--weights", str(weights_file),
            "--backend", "torch"]
    assert main(args) == ExitStatus.USAGE
    assert out.read_bytes() == b"keep me"
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == ExitStatus.OK
    assert cv2.imread(str(out)).shape == (480, 640, 3)


def _one_line_usage_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == ExitStatus.USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("depthstream: error:")
    assert "Traceback" not in err
    return err


def test_offline_without_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _one_line_usage_error(
        capsys, ["image", str(DATA / "case_4x3.png"), "-o", str(tmp_path / "o.png")])
    assert "--weights PATH" in err
    assert not (tmp_path / "o.png").exists()


def test_missing_input(tmp_path: Path, weights_file: Path, capsys: pytest.CaptureFixture) -> None:
    err = _one_line_usage_error(capsys, ["image", str(tmp_path / "nope.jpg"), "--weights",
                                         str(weights_file)])
    assert "nope.jpg" in err


def test_unreadable_picture(tmp_path: Path, weights_file: Path,
                            capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("this is text")
    _one_line_usage_error(capsys, ["image", str(bad), "-o", str(tmp_path / "o.png"),
                                   "--weights", str(weights_file), "--backend", "torch"])
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("name, damage", [
    ("broken.jpg", lambda data: data[:200]),  # cut short in its header
    ("broken.jpg", lambda data: data[:2] + bytes(len(data) - 2)),  # zeros after the start
    ("garbage.JPEG", lambda data: b"not a picture at all"),
])
def test_a_damaged_picture_is_called_damaged_not_unsupported(
        tmp_path: Path, cheap: None, capsys: pytest.CaptureFixture, name: str,
        damage) -> None:
    ok, jpg = cv2.imencode(".jpg", cv2.imread(str(DATA / "case_4x3.png")))
    assert ok
    bad = tmp_path / name
    bad.write_bytes(damage(jpg.tobytes()))
    err = _one_line_usage_error(capsys, ["image", str(bad), "-o", str(tmp_path / "o.png")])
    assert err == f"depthstream: error: cannot read {bad}: the file is damaged or not a picture"
    assert not (tmp_path / "o.png").exists()


def test_a_file_of_another_type_lists_the_supported_ones(
        tmp_path: Path, cheap: None, capsys: pytest.CaptureFixture) -> None:
    gif = tmp_path / "anim.gif"
    gif.write_bytes(b"GIF89a" + bytes(40))
    err = _one_line_usage_error(capsys, ["image", str(gif), "-o", str(tmp_path / "o.png")])
    assert err.startswith(f"depthstream: error: cannot read {gif} as a picture (supported: jpg")


def test_bad_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"\x00" * 100)
    err = _one_line_usage_error(capsys, ["image", str(DATA / "case_4x3.png"), "-o",
                                         str(tmp_path / "o.png"), "--weights", str(bad)])
    assert str(bad) in err


def test_output_folder_missing_parent_is_created(tmp_path: Path, weights_file: Path) -> None:
    src = tmp_path / "a.png"
    shutil.copy(DATA / "case_4x3.png", src)
    out = tmp_path / "x" / "y"
    assert main(["image", str(src), "-o", str(out), "--weights", str(weights_file),
                 "--backend", "torch"]) == ExitStatus.OK
    assert (out / "a_depth.png").exists()


def test_bad_arguments_exit_2() -> None:
    assert main(["image"]) == ExitStatus.USAGE
    assert main(["nope"]) == ExitStatus.USAGE


def test_serve_checks_weights_before_listening(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    err = _one_line_usage_error(capsys, ["serve", "--port", "0", "--data-dir",
                                         str(tmp_path / "data"), "--weights",
                                         str(tmp_path / "missing.pt")])
    assert "missing.pt" in err


def test_serve_camera_and_url_are_exclusive() -> None:
    assert main(["serve", "--camera", "0", "--url", "http://127.0.0.1:9/x"]) == ExitStatus.USAGE
