"""Package re-exports: every public name resolves lazily to its module's object."""

from __future__ import annotations

import importlib

import pytest

import stream


@pytest.mark.parametrize("name", sorted(stream._EXPORTS))
def test_export_resolves(name: str) -> None:
    module = importlib.import_module(f"stream.{stream._EXPORTS[name]}")
    assert getattr(stream, name) is getattr(module, name)
    assert name in module.__all__


def test_unknown_name() -> None:
    with pytest.raises(AttributeError):
        stream.nope  # noqa: B018
