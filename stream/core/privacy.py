"""Privacy: library telemetry off in depthstream's processes, the user's setting untouched.

OpenVINO's model conversion and NNCF send usage events to Google Analytics unless the
user opted out (the ``openvino_telemetry`` package, which also writes a consent file and
a client id under ``~/intel``). depthstream opens no connection except the weights
download and its own servers, so before either library is imported,
:func:`disable_telemetry` makes ``import openvino_telemetry`` fail *in this process*;
both libraries then fall back to their own no-op stubs. The user's global consent file
is neither read nor changed, so other OpenVINO tools behave as the user chose. Starts
no threads, touches no files.
"""

from __future__ import annotations

import sys

__all__ = ["TELEMETRY_MODULES", "disable_telemetry", "telemetry_disabled"]

TELEMETRY_MODULES = ("openvino_telemetry",)
"""Packages whose import is blocked in depthstream's processes."""


def disable_telemetry() -> None:
    """Block OpenVINO's telemetry package for this process (idempotent, cheap).

    A ``None`` entry in :data:`sys.modules` makes ``import openvino_telemetry`` raise
    ``ImportError``, which OpenVINO's converter and NNCF both catch to use their no-op
    stubs. If the package is already imported (another library in this process loaded
    it first), its one ``Telemetry`` instance, if made, is told not to send.
    """
    for name in TELEMETRY_MODULES:
        module = sys.modules.get(name, False)
        if module is False:
            sys.modules[name] = None  # type: ignore[assignment]
        elif module is not None:
            _silence_loaded(module)


def telemetry_disabled() -> bool:
    """Whether every telemetry package is blocked or silenced in this process."""
    return all(sys.modules.get(name, False) is None for name in TELEMETRY_MODULES)


def _silence_loaded(module: object) -> None:
    """Withdraw consent from an already made ``openvino_telemetry.Telemetry`` singleton."""
    telemetry = getattr(module, "Telemetry", None)
    instance = getattr(telemetry, "_SingletonMetaClass__single_instance", None)
    if instance is not None:
        instance.consent = False
