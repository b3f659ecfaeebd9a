"""How ``sigstream view`` draws an ECG stream: a scrolling strip of the lead in mV with each
beat's R peak marked and coloured by its decision, the stream's status changes, heart rate,
and a beat's Grad-CAM heatmap (the service explains the beats of a stream a viewer watches
through the mirror, and those a wearable asks for with ``explain``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stream.view.panels import finite, image, mapping

__all__ = ["digest", "values"]

_DECISIONS = ("accept", "reject", "uncertain")


def values(header: Mapping[str, Any], array: Any) -> Any:
    gain = finite(header.get("gain")) or 1.0
    return np.asarray(array, dtype=np.float64).ravel() / gain


def _gradcam(raw: Any) -> dict[str, Any] | None:
    """A result's Grad-CAM (two ``(F, T)`` uint8 maps) as two panel images."""
    cam = mapping(raw)
    shape = cam.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2
            and all(isinstance(n, int) and 0 < n <= 512 for n in shape)):
        return None
    out: dict[str, Any] = {}
    for key in ("spectrogram", "heatmap"):
        data = cam.get(key)
        if not isinstance(data, bytes) or len(data) != shape[0] * shape[1]:
            return None
        out[key] = image(np.frombuffer(data, np.uint8).reshape(shape))
    return out


def digest(body: Mapping[str, Any], values: Any) -> dict[str, Any] | None:
    if body.get("type") == "status":
        t_ns = body.get("t_start_ns")
        return {"t_ns": t_ns if isinstance(t_ns, int) else None, "class": "status",
                "label": str(body.get("status")), "detail": str(body.get("detail", ""))[:200]}
    t_ns = body.get("r_t_ns")
    if not isinstance(t_ns, int):
        return None
    decision = body.get("decision")
    fused = mapping(body.get("fused"))
    return {"t_ns": t_ns, "class": decision if decision in _DECISIONS else "uncertain",
            "label": str(body.get("identity") or decision), "beat": body.get("beat"),
            "identity": body.get("identity") if isinstance(body.get("identity"), str) else None,
            "score": finite(body.get("score")), "hr": finite(body.get("hr_bpm")),
            "quality": str(body.get("quality")), "reason": body.get("reason"),
            "fused": {"identity": fused.get("identity"), "decision": fused.get("decision"),
                      "score": finite(fused.get("score"))} if fused else None,
            "gradcam": _gradcam(body.get("gradcam"))}

