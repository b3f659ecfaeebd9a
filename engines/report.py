"""Evaluation reports as JSON: the values an evaluation computes (numpy scalars and arrays,
NaN where a figure is undefined) made into what ``json.dumps`` writes portably."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_number", "jsonable", "publish_report", "write_report"]


def json_number(v: Any) -> Any:
    """JSON-safe number: numpy scalars to Python, NaN/Inf to None."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    return f if math.isfinite(f) else None


def jsonable(obj: Any) -> Any:
    """``obj`` with every container made a dict/list, every number :func:`json_number`, and
    anything else its ``str``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (str, type(None))):
        return obj
    if isinstance(obj, (bool, int, float, np.generic)):
        return json_number(obj)
    return str(obj)


def write_report(report: Any, path: Path | str) -> Path:
    """Write ``report`` as indented JSON at ``path`` (its folder made if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def publish_report(report: Any, table: str, json_path: Path | str | None, *, tag: str) -> None:
    """Print ``table`` (the report's readable summary) on stdout; write ``report`` at
    ``json_path`` when one is given, saying so on stderr as ``[tag] wrote PATH``."""
    print(table)
    if json_path is not None:
        print(f"[{tag}] wrote {write_report(report, json_path)}", file=sys.stderr, flush=True)
