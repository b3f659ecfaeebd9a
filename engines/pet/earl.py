"""The EARL accreditation bands for the recovery coefficients of the NEMA IEC body phantom's
spheres, as data, and :func:`earl_check` of measured recovery coefficients against them.

RC = measured / true sphere activity concentration. ``rc_max`` uses the hottest voxel of the
sphere's VOI, ``rc_mean`` the mean of the A50 VOI (the 3-D isocontour at 50 % of that maximum,
not background corrected). The bands (EARL1: the original FDG-PET/CT accreditation, EARL2: its
2019 update for newer scanners), inclusive at both ends, per sphere inner diameter in mm:

=================  ===========  ===========  ===========  ===========  ===========  ===========
band               10           13           17           22           28           37
=================  ===========  ===========  ===========  ===========  ===========  ===========
EARL1 RCmean (A50) 0.27-0.43    0.44-0.60    0.57-0.73    0.63-0.78    0.72-0.85    0.76-0.89
EARL1 RCmax        0.34-0.57    0.59-0.85    0.73-1.01    0.83-1.09    0.91-1.13    0.95-1.16
EARL2 RCmean (A50) 0.39-0.61    0.63-0.86    0.76-0.97    0.80-0.99    0.82-0.97    0.85-1.00
EARL2 RCmax        0.52-0.88    0.85-1.22    1.00-1.38    1.01-1.32    1.01-1.26    1.05-1.29
=================  ===========  ===========  ===========  ===========  ===========  ===========

Pure Python; sequences of recovery coefficients are ordered by sphere size, 10 -> 37 mm, as
everywhere in :mod:`engines.pet`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

__all__ = ["EARL_BANDS", "EARL_DIAMETERS_MM", "EarlName", "RcBand", "RcKind", "earl_check"]

#: Sphere inner diameters (mm), in the order every sequence here follows.
EARL_DIAMETERS_MM: tuple[float, ...] = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)

EarlName = Literal["EARL1", "EARL2"]
RcKind = Literal["rc_max", "rc_mean"]


@dataclass(frozen=True, kw_only=True)
class RcBand:
    """An accepted range of one recovery coefficient, ``low <= rc <= high``."""

    low: float
    high: float

    def contains(self, rc: float) -> bool:
        """True when ``rc`` lies in the band (both ends included); NaN never does."""
        return self.low <= rc <= self.high


def _bands(pairs: Sequence[tuple[float, float]]) -> Mapping[float, RcBand]:
    return MappingProxyType({d: RcBand(low=lo, high=hi)
                             for d, (lo, hi) in zip(EARL_DIAMETERS_MM, pairs, strict=True)})


#: ``EARL_BANDS[band][kind][diameter_mm]``: the table of the module docstring (DATA.md).
EARL_BANDS: Mapping[EarlName, Mapping[RcKind, Mapping[float, RcBand]]] = MappingProxyType({
    "EARL1": MappingProxyType({
        "rc_mean": _bands([(0.27, 0.43), (0.44, 0.60), (0.57, 0.73), (0.63, 0.78),
                           (0.72, 0.85), (0.76, 0.89)]),
        "rc_max": _bands([(0.34, 0.57), (0.59, 0.85), (0.73, 1.01), (0.83, 1.09),
                          (0.91, 1.13), (0.95, 1.16)]),
    }),
    "EARL2": MappingProxyType({
        "rc_mean": _bands([(0.39, 0.61), (0.63, 0.86), (0.76, 0.97), (0.80, 0.99),
                           (0.82, 0.97), (0.85, 1.00)]),
        "rc_max": _bands([(0.52, 0.88), (0.85, 1.22), (1.00, 1.38), (1.01, 1.32),
                          (1.01, 1.26), (1.05, 1.29)]),
    }),
})


def _values(name: str, rc: Sequence[float]) -> list[float]:
    values = [float(v) for v in rc]
    if len(values) != len(EARL_DIAMETERS_MM):
        raise ValueError(f"{name} needs {len(EARL_DIAMETERS_MM)} values (spheres 10 -> 37 mm), "
                         f"got {len(values)}")
    return values


def earl_check(rc_max: Sequence[float], rc_mean: Sequence[float]) -> dict[str, Any]:
    """Check six recovery coefficients of each kind (spheres 10 -> 37 mm) against EARL1 and
    EARL2.

    Returns a JSON-ready dict::

        {"EARL1": {"rc_max": [{"diameter_mm": 10.0, "rc": 0.5, "low": 0.34, "high": 0.57,
                               "inside": True}, ...],          # 10 -> 37 mm
                   "rc_mean": [...],
                   "rc_max_inside": bool, "rc_mean_inside": bool, "passed": bool},
         "EARL2": {...},
         "in_earl1": bool, "in_earl2": bool}

    ``passed``/``in_earlN``: every sphere inside its band for both kinds. A NaN value is
    outside every band. A wrong count is a caller's bug (``ValueError``).
    """
    measured: dict[RcKind, list[float]] = {"rc_max": _values("rc_max", rc_max),
                                           "rc_mean": _values("rc_mean", rc_mean)}
    result: dict[str, Any] = {}
    for band_name, kinds in EARL_BANDS.items():
        entry: dict[str, Any] = {}
        for kind, bands in kinds.items():
            rows = []
            for diameter, rc in zip(EARL_DIAMETERS_MM, measured[kind], strict=True):
                band = bands[diameter]
                rows.append({"diameter_mm": diameter, "rc": None if math.isnan(rc) else rc,
                             "low": band.low, "high": band.high,
                             "inside": band.contains(rc)})
            entry[kind] = rows
            entry[f"{kind}_inside"] = all(row["inside"] for row in rows)
        entry["passed"] = bool(entry["rc_max_inside"] and entry["rc_mean_inside"])
        result[band_name] = entry
    result["in_earl1"] = result["EARL1"]["passed"]
    result["in_earl2"] = result["EARL2"]["passed"]
    return result
