"""Evaluation reports as JSON: the values an evaluation computes (numpy scalars and arrays,
NaN where a figure is undefined) made into what ``json.dumps`` writes portably."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["json_number", "jsonable"]


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
