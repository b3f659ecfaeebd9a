"""How ``sigstream view`` draws a live slice stream of a volume path (CT, PET): the slice as
sent and as denoised, side by side, in the modality's unit, with window/level
(:class:`~stream.paths.ViewSpec` of :func:`stream.paths.volumes.volume_path_spec`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stream.view.panels import finite, image

__all__ = ["digest", "values"]

_DTYPES = ("int16", "uint16", "int32", "float32")


def _rescaled(array: Any, slope: float | None, intercept: float | None) -> Any:
    out = np.asarray(array, dtype=np.float32)
    if array.dtype.kind == "f" or slope is None or intercept is None:
        return out
    return out * np.float32(slope) + np.float32(intercept)


def values(header: Mapping[str, Any], array: Any) -> Any:
    """A slice message's values in the modality's unit (stored x slope + intercept)."""
    return _rescaled(array, finite(header.get("slope")), finite(header.get("intercept")))


def digest(body: Mapping[str, Any], before: Any) -> dict[str, Any] | None:
    """The slice as sent (``before``, when the mirror sent it) and as denoised."""
    shape, dtype, pixels = body.get("shape"), body.get("dtype"), body.get("pixels")
    if (dtype not in _DTYPES or not isinstance(pixels, bytes) or not isinstance(shape, list)
            or len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape)):
        return None
    stored = np.frombuffer(pixels, dtype=np.dtype(dtype).newbyteorder("<"))
    if stored.size != shape[0] * shape[1]:
        return None
    after = _rescaled(stored.reshape(shape), finite(body.get("slope")),
                      finite(body.get("intercept")))
    return {"before": None if before is None else image(before), "after": image(after)}
