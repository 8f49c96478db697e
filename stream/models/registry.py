"""The model registry: every network depthstream runs, by its ``--model`` name.

Adding a network family is a module with its ``torch.nn.Module`` (built from nothing but
the official checkpoint's keys) plus its specs here; everything else reads the spec.
Pure data: imports nothing heavy.

Example:
    >>> get_spec("dav2-metric-indoor").max_depth
    20.0
    >>> sorted(MODELS)[:2]
    ['dav2-metric-indoor', 'dav2-metric-outdoor']
"""

from __future__ import annotations

from stream.core.errors import ConfigError
from stream.core.settings import DEFAULT_NETWORK
from stream.core.units import DepthKind
from stream.models.spec import Bound, Checkpoint, InputRule, ModelSpec, OutputResize

__all__ = ["DEFAULT_MODEL", "MIDAS_SMALL_SPEC", "DAV2_SMALL_SPEC", "DAV2_METRIC_INDOOR_SPEC",
           "DAV2_METRIC_OUTDOOR_SPEC", "MODELS", "get_spec", "spec_for_checkpoint"]

MIDAS_SMALL_SPEC = ModelSpec(
    name="midas-small",
    title="MiDaS v2.1 small",
    checkpoint=Checkpoint(
        name="MiDaS v2.1 small",
        file_name="midas_v21_small_256.pt",
        url="https://github.com/isl-org/MiDaS/releases/download/v2_1/midas_v21_small_256.pt",
        schema_file="midas_v21_small_256.schema.json",
        licence="MIT",
        size_bytes=85_000_000,
    ),
    input=InputRule(side=256, multiple_of=32, bound=Bound.UPPER),
    output=DepthKind.RELATIVE,
    resize=OutputResize.CUBIC,
    builder="midas:MidasSmall",
    example_side=256,
    summary="fastest; relative depth (2020)",
)

#: Depth Anything's default input sides by use, measured on a 2-core CPU
#: (docs/performance.md):
#: pictures take the reference's 518; videos and live input trade detail for speed.
DAV2_VIDEO_SIDE = 364
DAV2_LIVE_SIDE = 196
#: Depth Anything's ViT backbone by node name: int8's "DPT head only" variant keeps it fp32.
DAV2_BACKBONE = (r".*\.pretrained\..*",)
_DAV2_INPUT = InputRule(side=518, multiple_of=14, bound=Bound.LOWER, float64=True)
_HF = "https://huggingface.co/depth-anything"
_DAV2_SCHEMA = "depth_anything_v2_vits.schema.json"
_DAV2_BYTES = 99_200_000

DAV2_SMALL_SPEC = ModelSpec(
    name="dav2-small",
    title="Depth Anything V2 Small",
    checkpoint=Checkpoint(
        name="Depth Anything V2 Small",
        file_name="depth_anything_v2_vits.pth",
        url=f"{_HF}/Depth-Anything-V2-Small/resolve/main/depth_anything_v2_vits.pth",
        schema_file=_DAV2_SCHEMA,
        licence="Apache-2.0",
        size_bytes=_DAV2_BYTES,
    ),
    input=_DAV2_INPUT,
    output=DepthKind.RELATIVE,
    resize=OutputResize.LINEAR_CORNERS,
    builder="dav2:DepthAnythingV2Small",
    example_side=266,
    video_side=DAV2_VIDEO_SIDE,
    live_side=DAV2_LIVE_SIDE,
    int8_fp32_patterns=DAV2_BACKBONE,
    summary="far more detailed and accurate; relative depth",
)

def _dav2_metric(scene: str, data: str, max_depth: float, summary: str) -> ModelSpec:
    """A metric Depth Anything V2 Small fine-tune (Hypersim indoors, Virtual KITTI outdoors)."""
    file_name = f"depth_anything_v2_metric_{data.lower()}_vits.pth"
    return ModelSpec(
        name=f"dav2-metric-{scene}",
        title=f"Depth Anything V2 Small, metric {scene} ({data})",
        checkpoint=Checkpoint(
            name=f"Depth Anything V2 Small metric {scene} ({data})",
            file_name=file_name,
            url=f"{_HF}/Depth-Anything-V2-Metric-{data}-Small/resolve/main/{file_name}",
            schema_file=_DAV2_SCHEMA,
            licence="Apache-2.0",
            size_bytes=_DAV2_BYTES,
        ),
        input=_DAV2_INPUT,
        output=DepthKind.METRIC,
        resize=OutputResize.LINEAR_CORNERS,
        builder="dav2:DepthAnythingV2Small",
        build_args=(("max_depth", max_depth),),
        max_depth=max_depth,
        example_side=266,
        video_side=DAV2_VIDEO_SIDE,
        live_side=DAV2_LIVE_SIDE,
        int8_fp32_patterns=DAV2_BACKBONE,
        summary=summary,
    )


DAV2_METRIC_INDOOR_SPEC = _dav2_metric("indoor", "Hypersim", 20.0,
                                       "depth in metres indoors (up to 20 m)")
DAV2_METRIC_OUTDOOR_SPEC = _dav2_metric("outdoor", "VKITTI", 80.0,
                                        "depth in metres outdoors, driving scenes (up to 80 m)")

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (MIDAS_SMALL_SPEC, DAV2_SMALL_SPEC, DAV2_METRIC_INDOOR_SPEC,
                 DAV2_METRIC_OUTDOOR_SPEC)
}
DEFAULT_MODEL = DEFAULT_NETWORK
assert DEFAULT_MODEL in MODELS


def get_spec(model: str | ModelSpec | None = None) -> ModelSpec:
    """The spec of ``model`` (a ``--model`` name or a spec); ``None`` is the default.

    Raises:
        ConfigError: an unknown name, with the names there are.
    """
    if isinstance(model, ModelSpec):
        return model
    spec = MODELS.get(model or DEFAULT_MODEL)
    if spec is None:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    return spec


def spec_for_checkpoint(file_name: str) -> ModelSpec | None:
    """The spec whose official checkpoint file is called ``file_name``, if any."""
    return next((s for s in MODELS.values() if s.checkpoint.file_name == file_name), None)
