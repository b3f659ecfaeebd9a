"""How ``sigstream view`` draws a codec link end from its ``/metrics``: its level meter, its
played / concealed / late / skipped frames over time (receiver) or frames sent (sender), and
capture-to-playout latency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stream.view.panels import finite, histogram_quantiles

__all__ = ["digest"]

_COUNTERS = {"rx": ("played", "concealed", "late", "skipped", "packets_received"),
             "tx": ("packets_sent", "packets_dropped")}
Samples = Sequence[tuple[str, Mapping[str, str], float]]  # (sample name, labels, value)


def digest(families: Mapping[str, Samples]) -> dict[str, Any] | None:
    """One scrape of a link end (families ``sigstream_codec_*``) -> the meters panel."""
    def value(name: str) -> float | None:
        samples = families.get(f"sigstream_codec_{name}")
        return finite(samples[0][2]) if samples else None

    if "sigstream_codec_level_dbfs" not in families:
        return None
    role = "rx" if "sigstream_codec_played" in families else "tx"
    errors = {labels.get("code", "?"): v for _, labels, v in
              families.get("sigstream_codec_errors", ()) if v}
    latency = histogram_quantiles(families.get("sigstream_codec_latency_seconds", ()),
                                  (0.5, 0.99))
    return {"role": role, "level": value("level_dbfs"),
            "counters": {name: value(name) for name in _COUNTERS[role]
                         if f"sigstream_codec_{name}" in families},
            "errors": errors,
            "latency_ms": None if latency is None else [1000 * q for q in latency]}
