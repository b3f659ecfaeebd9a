"""Checks shared by the device and engine tests: the contract every component config keeps
(frozen, keyword-only) and reading a shipped evaluation report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = ["assert_frozen_kw_only", "shipped_report"]

C = TypeVar("C")


def assert_frozen_kw_only(config_cls: type[C]) -> C:
    """Check that ``config_cls()`` builds from its defaults, that the instance refuses
    assignment and that the class refuses positional arguments; returns the default instance."""
    config = config_cls()
    first = dataclasses.fields(config)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, first, getattr(config, first))
    with pytest.raises(TypeError):
        config_cls(getattr(config, first))  # type: ignore[call-arg]
    return config


def shipped_report(path: Path) -> dict[str, Any]:
    """The shipped evaluation report at ``path`` (JSON); skips the test where none is shipped."""
    if not path.is_file():
        pytest.skip(f"no shipped report {path.name}")
    report: dict[str, Any] = json.loads(path.read_text())
    return report
