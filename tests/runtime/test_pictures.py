"""Tests for stream/pictures.py: planning the outputs, then estimating and writing them.

The network is the cheap test double (:mod:`support.fakes`): these tests are about which
files are written and what they hold, not about the model.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from support.clips import pattern
from support.fakes import cheap_estimator

from stream.core.errors import SinkError, SourceError
from stream.depth.colormap import minmax
from stream.models.transforms import preprocess_array, resize_depth, to_rgb
from stream.runtime.pictures import (
    DepthBands,
    PictureSettings,
    network_input,
    plan_outputs,
    render_picture,
    run_pictures,
)


def _picture(path: Path, index: int = 0, size_wh: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pattern(index, size_wh))
    return path


# -- plan_outputs -------------------------------------------------------------------------


def test_one_picture_and_a_png_output_is_that_file(tmp_path):
    src = _picture(tmp_path / "in.jpg")
    assert plan_outputs([src], tmp_path / "out.png") == [(src, tmp_path / "out.png")]


def test_pictures_into_a_folder_are_named_stem_depth(tmp_path):
    a, b = _picture(tmp_path / "a.png"), _picture(tmp_path / "b.jpg", 1)
    out = tmp_path / "new" / "folder"
    assert plan_outputs([a, b], out) == [(a, out / "a_depth.png"), (b, out / "b_depth.png")]
    assert out.is_dir()  # made, and still empty: nothing is written while planning
    assert list(out.iterdir()) == []


def test_one_picture_and_an_output_without_suffix_is_a_folder(tmp_path):
    src = _picture(tmp_path / "in.png")
    assert plan_outputs([src], tmp_path / "out") == [(src, tmp_path / "out" / "in_depth.png")]


def test_without_output_pictures_go_to_the_current_folder_as_stem_depth(tmp_path, monkeypatch):
    src = _picture(tmp_path / "pics" / "cat.webp")
    monkeypatch.chdir(tmp_path)
    [(got_src, dst)] = plan_outputs([src], None)
    assert got_src == src
    assert dst.resolve() == (tmp_path / "cat_depth.png").resolve()


def test_a_folder_input_gives_its_pictures_sorted_by_name(tmp_path):
    folder = tmp_path / "pics"
    for name in ("c.png", "a.jpg", "b.bmp"):
        _picture(folder / name)
    (folder / "notes.txt").write_text("not a picture")
    (folder / "sub").mkdir()
    pairs = plan_outputs([folder], tmp_path / "out")
    assert [src.name for src, _ in pairs] == ["a.jpg", "b.bmp", "c.png"]
    assert [dst.name for _, dst in pairs] == ["a_depth.png", "b_depth.png", "c_depth.png"]


@pytest.mark.parametrize("suffix", [".jpg", ".JPEG", ".bmp", ".webp"])
def test_an_output_that_is_not_png_is_refused(tmp_path, suffix):
    src = _picture(tmp_path / "in.png")
    with pytest.raises(SinkError, match="must be a .png file or a folder"):
        plan_outputs([src], tmp_path / f"out{suffix}")


def test_several_pictures_into_an_existing_file_are_refused(tmp_path):
    a, b = _picture(tmp_path / "a.png"), _picture(tmp_path / "b.png")
    (tmp_path / "out").write_text("a file")
    with pytest.raises(SinkError, match="output is a file"):
        plan_outputs([a, b], tmp_path / "out")


def test_an_output_folder_that_cannot_be_made_is_a_sink_error(tmp_path):
    src = _picture(tmp_path / "in.png")
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(SinkError, match="cannot create output folder"):
        plan_outputs([src], tmp_path / "file" / "out")


def test_two_pictures_with_one_output_name_are_refused_before_any_work(tmp_path):
    a = _picture(tmp_path / "one" / "x.png")
    b = _picture(tmp_path / "two" / "x.jpg", 1)
    with pytest.raises(SinkError, match="would both be written to"):
        plan_outputs([a, b], tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_existing_output_needs_overwrite(tmp_path):
    a, b = _picture(tmp_path / "a.png"), _picture(tmp_path / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_depth.png").write_bytes(b"old")
    with pytest.raises(SinkError, match="output exists"):
        plan_outputs([a, b], out)
    assert plan_outputs([a, b], out, overwrite=True) == [(a, out / "a_depth.png"),
                                                         (b, out / "b_depth.png")]
    assert (out / "b_depth.png").read_bytes() == b"old"  # planning replaces nothing


def test_missing_inputs_and_empty_folders_are_source_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        plan_outputs([tmp_path / "missing.png"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no pictures in folder"):
        plan_outputs([tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- run_pictures -------------------------------------------------------------------------


@pytest.mark.parametrize("side", [False, True], ids=["depth", "side by side"])
def test_run_writes_the_rendered_depth_of_each_picture(tmp_path, side):
    sizes = [(64, 48), (40, 72)]
    srcs = [_picture(tmp_path / f"p{n}.png", n, size) for n, size in enumerate(sizes)]
    pairs = plan_outputs(srcs, tmp_path / "out")
    settings = PictureSettings(side=side)
    estimator = cheap_estimator()

    results = run_pictures(pairs, estimator, settings)

    assert [(r.source, r.outputs) for r in results] == [(s, (d,)) for s, d in pairs]
    for (src, dst), (width, height), result in zip(pairs, sizes, results):
        bgr = cv2.imread(str(src))
        depth, _ = estimator.predict(to_rgb(bgr, "bgr"))
        written = cv2.imread(str(dst))
        assert written.shape == (height, width * (2 if side else 1), 3)
        # the same picture up to float rounding of pixels on a colour boundary
        expected = render_picture(bgr, depth, settings)
        assert np.mean(written != expected) < 1e-3
        assert np.abs(written.astype(int) - expected).max() <= 1
        if side:
            np.testing.assert_array_equal(written[:, :width], bgr)
        assert result.inference_ms >= 0.0
    # each output is its own picture's depth, not a neighbour's
    assert not np.array_equal(cv2.imread(str(pairs[0][1]))[:40, :40],
                              cv2.imread(str(pairs[1][1]))[:40, :40])


def test_run_with_raw_also_writes_16_bit_png_and_npy(tmp_path):
    src = _picture(tmp_path / "cat.png")
    pairs = plan_outputs([src], tmp_path / "out")
    [result] = run_pictures(pairs, cheap_estimator(), PictureSettings(raw=True))

    out = tmp_path / "out"
    assert result.outputs == (out / "cat_depth.png", out / "cat_depth16.png",
                              out / "cat_depth16.npy")
    depth = np.load(out / "cat_depth16.npy")
    expected, _ = cheap_estimator().predict(to_rgb(cv2.imread(str(src)), "bgr"))
    np.testing.assert_allclose(depth, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    u16 = cv2.imread(str(out / "cat_depth16.png"), cv2.IMREAD_UNCHANGED)
    assert u16.dtype == np.uint16 and u16.shape == depth.shape
    assert (u16.min(), u16.max()) == (0, 65535)  # the picture's own min-max
    assert u16.flat[np.argmax(depth)] == 65535 and u16.flat[np.argmin(depth)] == 0


def test_run_with_raw_keeps_one_depth_suffix(tmp_path, monkeypatch):
    src = _picture(tmp_path / "pics" / "cat.png")
    monkeypatch.chdir(tmp_path)
    [result] = run_pictures(plan_outputs([src], None), cheap_estimator(),
                            PictureSettings(raw=True))
    assert [p.name for p in result.outputs] == ["cat_depth.png", "cat_depth16.png",
                                                "cat_depth16.npy"]


def test_a_picture_that_does_not_decode_is_reported_and_skipped(tmp_path):
    good = _picture(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    pairs = plan_outputs([bad, good], tmp_path / "out")
    errors: list[SourceError] = []

    results = run_pictures(pairs, cheap_estimator(), PictureSettings(), on_error=errors.append)

    assert [r.source for r in results] == [good]
    assert len(errors) == 1 and "bad.png" in str(errors[0])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_depth.png"]


def test_a_picture_that_does_not_decode_raises_without_on_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    pairs = plan_outputs([bad], tmp_path / "out.png")
    with pytest.raises(SourceError, match="cannot read"):
        run_pictures(pairs, cheap_estimator(), PictureSettings())
    assert not (tmp_path / "out.png").exists()


# -- never onto an input ------------------------------------------------------------------


def test_a_folder_can_be_its_own_output_folder_and_a_rerun_finds_the_same_pictures(tmp_path):
    pics = tmp_path / "pics"
    a, b = _picture(pics / "a.png"), _picture(pics / "b.jpg", 1)
    originals = {p: p.read_bytes() for p in (a, b)}
    pairs = plan_outputs([pics], pics, raw=True)
    assert pairs == [(a, pics / "a_depth.png"), (b, pics / "b_depth.png")]
    run_pictures(pairs, cheap_estimator(), PictureSettings(raw=True))
    assert {p: p.read_bytes() for p in (a, b)} == originals
    # The outputs now sit next to the pictures: they are not taken for new inputs.
    with pytest.raises(SinkError, match="output exists"):
        plan_outputs([pics], pics, raw=True)
    assert plan_outputs([pics], pics, overwrite=True, raw=True) == pairs


def test_a_depth_named_picture_without_its_original_is_an_input(tmp_path):
    pic = _picture(tmp_path / "pics" / "lake_depth.png")
    assert plan_outputs([tmp_path / "pics"], tmp_path / "out") == [
        (pic, tmp_path / "out" / "lake_depth_depth.png")]


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("how", ["same path", "dot path", "symlink", "hard link"])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, how, raw):
    src = _picture(tmp_path / "pic.png")
    out = {"same path": src, "dot path": tmp_path / "." / "pic.png",
           "symlink": tmp_path / "link.png", "hard link": tmp_path / "hard.png"}[how]
    if how == "symlink":
        out.symlink_to(src)
    elif how == "hard link":
        out.hardlink_to(src)
    before = src.read_bytes()
    with pytest.raises(SinkError, match="would replace the input"):
        plan_outputs([src], out, overwrite=True, raw=raw)
    assert src.read_bytes() == before


def test_a_raw_output_that_is_an_input_is_refused(tmp_path):
    pics = tmp_path / "pics"
    src = _picture(pics / "x.png")
    other = _picture(tmp_path / "x_depth16.png", 1)  # the raw output of x, given as input
    with pytest.raises(SinkError, match="would replace the input"):
        plan_outputs([src, other], tmp_path, overwrite=True, raw=True)


def test_an_output_folder_that_is_a_symlink_to_the_inputs_folder_is_safe(tmp_path):
    pics = tmp_path / "pics"
    a = _picture(pics / "a.png")
    (tmp_path / "alias").symlink_to(pics)
    [(src, dst)] = plan_outputs([pics], tmp_path / "alias")
    assert src == a and dst.resolve() == (pics / "a_depth.png").resolve()


# -- band by band: the same numbers as the whole-picture path ------------------------------


@pytest.mark.parametrize("size_hw", [(48, 64), (480, 640), (17, 300), (256, 256), (3, 2),
                                     (2000, 1500)])
def test_network_input_equals_the_reference_transform(size_hw):
    bgr = np.random.default_rng(size_hw[0]).integers(0, 256, (*size_hw, 3), np.uint8)
    expected = preprocess_array(to_rgb(bgr, "bgr"))
    got = network_input(bgr)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-6)


@pytest.mark.parametrize("size_hw", [(48, 64), (1080, 1920), (61, 1000), (5, 5)])
def test_depth_bands_equal_the_whole_resize(size_hw, monkeypatch):
    monkeypatch.setattr("stream.runtime.pictures._BAND_BYTES", 4 * size_hw[1] * 7)  # 7-row bands
    net = np.random.default_rng(1).random((192, 256)).astype(np.float32)
    bands = DepthBands(net, size_hw)
    assert bands.band_rows == 7
    expected = resize_depth(net, size_hw)
    np.testing.assert_allclose(bands.to_array(), expected, rtol=0, atol=2e-5)
    assert bands.minmax() == pytest.approx(minmax(expected), abs=2e-5)


def test_bands_keep_nan_out_of_the_range():
    net = np.full((4, 4), 2.0, np.float32)
    net[0, 0] = np.nan
    lo, hi = DepthBands(net, (40, 40)).minmax()
    assert np.isfinite(lo) and np.isfinite(hi)


def test_outputs_do_not_depend_on_the_band_height(tmp_path, monkeypatch):
    src = _picture(tmp_path / "cat.png", 3, (96, 80))
    settings = PictureSettings(raw=True, side=True)
    run_pictures(plan_outputs([src], tmp_path / "whole", raw=True), cheap_estimator(), settings)
    monkeypatch.setattr("stream.runtime.pictures._BAND_BYTES", 1)  # one row per band
    run_pictures(plan_outputs([src], tmp_path / "rows", raw=True), cheap_estimator(), settings)
    for name in ("cat_depth.png", "cat_depth16.png"):
        a = cv2.imread(str(tmp_path / "whole" / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "rows" / name), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.load(tmp_path / "whole" / "cat_depth16.npy"),
                                  np.load(tmp_path / "rows" / "cat_depth16.npy"))
