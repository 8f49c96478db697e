"""Tests for the shipped samples/: pictures decode, the clip has the promised streams and size."""

from fractions import Fraction
from pathlib import Path

import av
import cv2
import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
PICTURES = ["astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg"]
CLIP = SAMPLES / "clip.mp4"
RATES = (Fraction(30000, 1001), Fraction(30))
SIZES_WH = ((640, 480), (640, 360))
BUDGET_BYTES = 3_000_000


@pytest.mark.parametrize("name", PICTURES)
def test_picture_decodes_as_colour_photo(name):
    """Each JPEG decodes with OpenCV as a textured colour picture."""
    bgr = cv2.imread(str(SAMPLES / name), cv2.IMREAD_UNCHANGED)
    assert bgr is not None, f"{name} does not decode"
    assert bgr.ndim == 3 and bgr.shape[2] == 3
    assert min(bgr.shape[:2]) >= 256
    assert bgr.std() > 20  # a real picture, not a flat fill


def test_clip_video_stream():
    """H.264 at a promised size and rate, 10-15 s, changing slowly."""
    with av.open(str(CLIP)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert (video.width, video.height) in SIZES_WH
        assert video.average_rate in RATES
        frames = [f for f in container.decode(video=0)]
    assert all((f.width, f.height) == (video.width, video.height) for f in frames)
    duration_s = len(frames) / video.average_rate
    assert 10 <= duration_s <= 15
    # successive frames differ a little (a slow pan), never a cut or a frozen stretch
    mid = frames[len(frames) // 2].to_ndarray(format="gray").astype(int)
    nxt = frames[len(frames) // 2 + 1].to_ndarray(format="gray").astype(int)
    assert 0 < abs(mid - nxt).mean() < 10


def test_clip_audio_matches_video_duration():
    """The AAC track lasts as long as the video, within 0.1 s."""
    with av.open(str(CLIP)) as container:
        video = container.streams.video[0]
        n_video = sum(1 for _ in container.decode(video=0))
        container.seek(0)
        audio = container.streams.audio[0]
        n_samples = sum(f.samples for f in container.decode(audio=0))
        rate = audio.rate
    video_s = n_video / video.average_rate
    audio_s = n_samples / rate
    assert abs(audio_s - video_s) < 0.1


def test_samples_fit_budget():
    """Everything in samples/ stays under 3 MB."""
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total < BUDGET_BYTES, f"samples/ holds {total} bytes"
