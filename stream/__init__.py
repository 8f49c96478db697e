"""depthstream: live monocular depth from any camera or video on a CPU.

Networks: MiDaS v2.1 small (the fast default) and Depth Anything V2 Small, relative or
metric (metres); see :mod:`stream.models.registry`.

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
    "Frame": "core.records",
    "DepthFrame": "core.records",
    "VideoInfo": "core.records",
    # errors
    "StreamError": "core.errors",
    "SourceError": "core.errors",
    "SinkError": "core.errors",
    "WeightsError": "core.errors",
    "ConfigError": "core.errors",
    "PipelineError": "core.errors",
    # model, weights, transforms, inference
    "MidasSmall": "models.midas",
    "load_state_dict": "models.weights",
    "MIDAS_SMALL": "models.weights",
    "network_size": "models.transforms",
    "preprocess": "models.transforms",
    "resize_depth": "models.transforms",
    "create_backend": "engines.factory",
    "TorchBackend": "engines.torch_backend",
    "OpenVinoBackend": "engines.openvino_backend",
    "DepthEstimator": "engines.estimator",
    "create_estimator": "engines.estimator",
    # colour, smoothing, metric
    "colorize": "depth.colormap",
    "DisplayRange": "depth.colormap",
    "TemporalSmoother": "depth.smoothing",
    "fit_metric": "geometry.metric",
    "fit_metric_scale": "geometry.metric",
    "MetricScale": "geometry.metric",
    # pipeline and network output
    "StreamSettings": "core.settings",
    "RunStats": "core.stats",
    "Pipeline": "runtime.pipeline",
    "convert": "runtime.builder",
    "ZmqPublisher": "sinks.publisher",
    "decode_message": "sinks.publisher",
    # robotics: camera model, point clouds, ROS 2 bags, Foxglove
    "RobotSettings": "core.settings",
    "PinholeCamera": "geometry.camera",
    "PointCloud": "geometry.camera",
    "RosbagSink": "robotics.rosbag",
    "McapSink": "robotics.foxglove",
    "FoxgloveServerSink": "robotics.foxglove",
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
