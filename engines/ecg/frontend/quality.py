"""Signal quality of one window of an ECG stream: the tests behind the status of a beat or a
quality block, worst first (``"nan"``, ``"lead_off"``, ``"saturated"``, ``"flat"``,
``"noisy"``, else :data:`QUALITY_OK`); why each test reads what it reads is in
:mod:`engines.ecg.frontend`, the thresholds are :class:`FrontendConfig` fields."""

from __future__ import annotations

import numpy as np

from engines.ecg.frontend.config import QUALITY_OK, FrontendConfig
from engines.ecg.frontend.filters import median_lower

__all__ = ["CURVATURE_FS_HZ", "QRS_HALF_S", "assess"]

CURVATURE_FS_HZ = 128.0  # the "noisy" curvature is taken at about this sample rate
QRS_HALF_S = 0.06  # half-width of the window a QRS amplitude (artefact test) is measured in


def assess(
    x: np.ndarray,
    y: np.ndarray,
    nonfinite: np.ndarray | None,
    amps: list[float],
    cfg: FrontendConfig,
    *,
    clip_n: int,
    curv_step: int,
    curv_scale: float,
) -> tuple[str, str]:
    """``(status, detail)`` of one window: ``x`` its input samples (mV, non-finite ones held
    at the last finite value), ``y`` the same samples' morphology band (mV), ``nonfinite``
    which input samples were not finite (``None``: none in the stream so far), ``amps`` the
    QRS peak-to-peak amplitudes (mV) of the beats detected in it. ``clip_n``: samples at an
    extreme value that make clipping; the curvature is taken every ``curv_step`` samples and
    ``curv_scale`` makes it per s^2."""
    n = x.size
    n_nan = 0 if nonfinite is None else np.count_nonzero(nonfinite)
    if n_nan:
        return "nan", f"{n_nan} non-finite samples"
    xmax, xmin = float(x.max()), float(x.min())
    at_max = int(np.count_nonzero(x == xmax))
    at_min = int(np.count_nonzero(x == xmin))
    if xmax - xmin <= cfg.lead_off_ptp_mV:
        return "lead_off", f"constant at {xmax:.4g} mV"
    if max(at_max, at_min) >= cfg.lead_off_fraction * n:
        value = xmax if at_max >= at_min else xmin
        return "lead_off", f"pinned at {value:.4g} mV for {max(at_max, at_min)}/{n} samples"
    if max(at_max, at_min) >= clip_n:
        return "saturated", f"{at_max} samples at max {xmax:.4g}, {at_min} at min {xmin:.4g}"
    ptp = float(y.max() - y.min())
    if ptp < cfg.flat_ptp_mV:
        return "flat", f"band peak-to-peak {ptp:.3g} mV"
    # second difference at a fixed time step (~1/128 s), so noise reads the same at any fs
    yd = y[:: curv_step]
    curv = np.abs(yd[2:] + yd[:-2] - 2.0 * yd[1:-1])
    curvature = median_lower(curv) * curv_scale / ptp
    if curvature > cfg.curvature_max_per_s2:
        return "noisy", f"median curvature / peak-to-peak {curvature:.3g} /s^2"
    if not amps:
        return "noisy", "no QRS detected"
    ratio = ptp / median_lower(np.asarray(amps))
    if ratio > cfg.artefact_ratio_max:
        return "noisy", f"band peak-to-peak {ratio:.3g} x the QRS amplitude (artefacts)"
    return QUALITY_OK, f"median curvature / peak-to-peak {curvature:.3g} /s^2"
