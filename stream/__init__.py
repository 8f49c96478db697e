"""depthstream: live monocular depth (MiDaS v2.1 small) from any camera or video on a CPU.

Public names are re-exported here and imported lazily, so ``import stream`` stays light
(torch, timm and PyAV load on first use).

Example:
    >>> from stream import DepthStream, estimate
    >>> depth = estimate("photo.jpg")  # doctest: +SKIP
    >>> with DepthStream(0) as camera:  # doctest: +SKIP
    ...     frame = camera.latest(timeout=1.0)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # Python API
    "estimate": "api",
    "clear_cache": "api",
    "DepthStream": "api",
    # records
    "Frame": "records",
    "DepthFrame": "records",
    "VideoInfo": "records",
    # errors
    "StreamError": "errors",
    "SourceError": "errors",
    "SinkError": "errors",
    "WeightsError": "errors",
    "ConfigError": "errors",
    "PipelineError": "errors",
    # model, weights, transforms, inference
    "MidasSmall": "model",
    "load_state_dict": "weights",
    "MIDAS_SMALL": "weights",
    "network_size": "transforms",
    "preprocess": "transforms",
    "resize_depth": "transforms",
    "create_backend": "backends",
    "TorchBackend": "backends",
    "OpenVinoBackend": "backends",
    "DepthEstimator": "inference",
    "create_estimator": "inference",
    # colour, smoothing, metric
    "colorize": "colormap",
    "DisplayRange": "colormap",
    "TemporalSmoother": "smoothing",
    "fit_metric": "metric",
    "fit_metric_scale": "metric",
    "MetricScale": "metric",
    # pipeline and network output
    "StreamSettings": "settings",
    "RunStats": "stats",
    "Pipeline": "pipeline",
    "convert": "builder",
    "ZmqPublisher": "publisher",
    "decode_message": "publisher",
    # robotics: camera model, point clouds, ROS 2 bags, Foxglove
    "RobotSettings": "settings",
    "PinholeCamera": "camera",
    "PointCloud": "camera",
    "RosbagSink": "rosbag_sink",
    "McapSink": "foxglove_sink",
    "FoxgloveServerSink": "foxglove_sink",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
