"""Peaks in real spectra: chemotools' fermentation stream (1,629 time-ordered on-line spectra x
1,047 points) and coffee set (60 ATR-FTIR spectra x 1,841 points), DATA.md.

Real spectra come without peak labels, so two checks that need none:

- **Injection** (real background, real noise, known truth): into every ``inject_every``-th
  fermentation spectrum and every coffee spectrum, ``n_inject`` synthetic peaks (Gaussian,
  Lorentzian or pseudo-Voigt at random, supports 7-41 samples, heights 2-20 % of the spectrum's
  range, centres at least 8 samples apart) are added. Each detector runs on the spectrum before
  and after; detections after that match none before (+-2 samples) are the new ones; a new
  detection within +-2 samples of an injected centre is a hit (one-to-one). Precision = hits /
  new detections, recall = hits / injected peaks. A peak injected onto a real one may be missed
  for that reason alone; every detector sees the same spectra.
- **Stability** over the fermentation stream in time order: the fraction of a spectrum's
  detected peaks found again within +-2 samples in the next spectrum (persistence), the median
  shift of those, and the mean and spread of the peak count per spectrum. A process that
  drifts slowly should keep its peaks where they are.

Detectors are callables ``list of spectra -> list of peak tables`` (field ``index``), so a
neural model runs its windows in batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from devices.spectra_sim import peak_profiles
from engines.roi.metrics import match_peaks

__all__ = [
    "format_real",
    "inject",
    "injection_scores",
    "load_real_spectra",
    "real_spectra_section",
    "stability",
]

Detector = Callable[[list[np.ndarray]], list[np.ndarray]]

_SHAPES = ("gauss", "lorentz", "voigt")
_TOLERANCE = 2.0


def load_real_spectra() -> dict[str, np.ndarray] | None:
    """``{"fermentation": (1629, 1047), "coffee": (60, 1841)}`` float64, or None without
    chemotools (the ``data`` extra)."""
    try:
        from chemotools.datasets import load_coffee, load_fermentation_test
    except ImportError:
        return None
    fermentation, _ = load_fermentation_test()
    coffee, _ = load_coffee()
    return {
        "fermentation": np.asarray(fermentation, dtype=np.float64),
        "coffee": np.asarray(coffee, dtype=np.float64),
    }


def inject(
    x: np.ndarray, n_peaks: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``x`` plus ``n_peaks`` synthetic peaks, and their centres (samples)."""
    length = x.size
    span = float(np.ptp(x)) or 1.0
    widths = rng.integers(7, 42, size=n_peaks)
    centres: list[float] = []
    while len(centres) < n_peaks:  # rejection: keep the injected peaks apart
        c = float(rng.uniform(25.0, length - 26.0))
        if all(abs(c - o) >= 8.0 for o in centres):
            centres.append(c)
    y = x.copy()
    truth = []
    for c, w in zip(centres, widths, strict=True):
        shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
        prof = peak_profiles(shape, 0.01, np.array([w]), int(w))[0]
        start = int(round(c - (w - 1) / 2.0))
        lo, hi = max(start, 0), min(start + int(w), length)
        y[lo:hi] += rng.uniform(0.02, 0.2) * span * prof[lo - start : hi - start]
        truth.append(start + (w - 1) / 2.0)
    return y, np.array(truth)


def injection_scores(
    detectors: dict[str, Detector],
    spectra: np.ndarray,
    *,
    n_inject: int,
    seed: int,
) -> dict[str, Any]:
    """Precision / recall / F1 of each detector on injected peaks (module docstring)."""
    rng = np.random.default_rng(seed)
    cases = [inject(x, n_inject, rng) for x in spectra]
    out: dict[str, Any] = {}
    for name, detect in detectors.items():
        hits = new = injected = 0
        tables_before = detect(list(spectra))
        tables_after = detect([y for y, _ in cases])
        for t0, t1, (_, truth) in zip(tables_before, tables_after, cases, strict=True):
            before, after = t0["index"], t1["index"]
            seen, _ = match_peaks(after, before, _TOLERANCE)
            fresh = np.delete(after, seen)
            ip, _ = match_peaks(fresh, truth, _TOLERANCE)
            hits += ip.size
            new += fresh.size
            injected += truth.size
        p = hits / new if new else None
        r = hits / injected if injected else None
        f1 = None if not p or not r else 2 * p * r / (p + r)
        out[name] = {"peak_precision": p, "peak_recall": r, "peak_f1": f1,
                     "injected": injected, "new_detections": new, "hits": hits}
    return out


def stability(detectors: dict[str, Detector], spectra: np.ndarray) -> dict[str, Any]:
    """Persistence of detected peaks between consecutive spectra (module docstring)."""
    out: dict[str, Any] = {}
    for name, detect in detectors.items():
        positions = [t["index"] for t in detect(list(spectra))]
        counts = np.array([p.size for p in positions])
        kept = shifts = 0
        moved: list[np.ndarray] = []
        for a, b in zip(positions[:-1], positions[1:], strict=True):
            ia, ib = match_peaks(a, b, _TOLERANCE)
            kept += ia.size
            shifts += a.size
            moved.append(np.abs(a[ia] - b[ib]))
        shift = np.concatenate(moved) if moved else np.zeros(0)
        out[name] = {
            "persistence": kept / shifts if shifts else None,
            "median_shift_samples": float(np.median(shift)) if shift.size else None,
            "peaks_per_spectrum_mean": float(counts.mean()),
            "peaks_per_spectrum_sd": float(counts.std()),
        }
    return out


def real_spectra_section(
    detectors: dict[str, Detector], *, n_inject: int = 8, inject_every: int = 8, seed: int
) -> dict[str, Any]:
    """The report's ``real_spectra`` section (module docstring), or ``{"skipped": why}``."""
    data = load_real_spectra()
    if data is None:
        return {"skipped": "chemotools is not installed (pip install -e '.[data]')"}
    fermentation, coffee = data["fermentation"], data["coffee"]
    injected = fermentation[::inject_every]
    return {
        "note": "injection: peaks added to real spectra, scored on the detections they add; "
        "stability: consecutive fermentation spectra (see engines.roi.evaluate.real_spectra)",
        "sizes": {
            "fermentation": list(fermentation.shape),
            "coffee": list(coffee.shape),
            "fermentation_injected": len(injected),
            "peaks_injected_per_spectrum": n_inject,
        },
        "injection": {
            "fermentation": injection_scores(detectors, injected, n_inject=n_inject, seed=seed),
            "coffee": injection_scores(detectors, coffee, n_inject=n_inject, seed=seed + 1),
        },
        "stability": stability(detectors, fermentation),
    }


def format_real(section: dict[str, Any]) -> str:
    """Lines of the printed table for the real-spectra section."""
    if "skipped" in section:
        return f"real spectra: skipped ({section['skipped']})"
    lines = ["real spectra, injected peaks (P / R / F1) and stability over the fermentation "
             "stream (persistence, median shift, peaks per spectrum):"]
    inj = section["injection"]
    stab = section["stability"]
    for name in stab:
        cells = []
        for data in inj:
            m = inj[data][name]
            cells.append(f"{data} {_f(m['peak_precision'])}/{_f(m['peak_recall'])}/"
                         f"{_f(m['peak_f1'])}")
        s = stab[name]
        lines.append(
            f"  {name:<18} {'  '.join(cells)}  persistence {_f(s['persistence'])}, shift "
            f"{_f(s['median_shift_samples'], '.2f')}, peaks {s['peaks_per_spectrum_mean']:.1f}"
            f" +- {s['peaks_per_spectrum_sd']:.1f}"
        )
    return "\n".join(lines)


def _f(v: float | None, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)
