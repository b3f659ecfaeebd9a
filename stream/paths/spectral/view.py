"""How ``sigstream view`` draws a spectral stream: the spectrum, its regions shaded, its peaks
marked (hover: position, height, area, width), and a waterfall of peak positions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stream.view.panels import MAX_MARKERS, envelope, finite, mapping, spans

__all__ = ["digest", "values"]


def values(header: Mapping[str, Any], array: Any) -> Any:
    return np.asarray(array, dtype=np.float64).ravel()


def digest(body: Mapping[str, Any], values: Any) -> dict[str, Any]:
    markers = []
    peaks = body.get("peaks")
    for raw in peaks if isinstance(peaks, list) else ():
        peak = mapping(raw)
        index = finite(peak.get("index"))
        if index is None:
            continue
        height = finite(peak.get("height"))
        y = None
        if values is not None and 0 <= index < len(values):
            y = float(values[int(index)])
        markers.append({"x": index, "y": y if y is not None else height,
                        "height": height, "area": finite(peak.get("area")),
                        "width": finite(peak.get("width")),
                        "overlaps": peak.get("overlaps") is True})
        if len(markers) >= MAX_MARKERS:
            break
    return {"curve": None if values is None else envelope(values),
            "length": None if values is None else len(values),
            "spans": spans(body.get("roi")), "markers": markers}

