"""Joint least-squares fit of a sum of peaks plus a smooth background, batched over spectra.

Model of one spectrum ``y`` (L samples): ``f(x) = sum_k h_k phi_k(x - c_k) + B(x) b`` with

- ``phi`` the peak shape: ``"hann"``, the paper's Hann window of support ``w`` samples,
  ``cos^2(pi u / (w + 1))`` for ``|u| < (w + 1) / 2`` (FWHM ``(w + 1) / 2``), or ``"pvoigt"``,
  a pseudo-Voigt ``eta L + (1 - eta) G`` of FWHM ``(w + 1) / 2`` whose mixing ``eta`` in [0, 1]
  is fitted per peak (Gaussian, Lorentzian and Voigt peaks alike);
- ``B`` the cubic-spline basis through ``knots`` evenly spread knots (the simulator's
  background), so the background is linear in ``b``.

Parameters per peak: centre ``c`` (samples), ``log w`` and height ``h`` (and ``eta``);
Levenberg-Marquardt with Marquardt's diagonal scaling and one damping factor per spectrum,
started from the detector's peaks after a linear least-squares solve for the heights and the
background at the starting centres and widths.

Why it is cheap: a peak only touches a window of samples around its centre, so its Jacobian
columns are kept as (window,) rows and the normal equations are assembled from window
products (peak x peak only for overlapping windows, peak x background against the basis rows
of the window) instead of a dense (L, P) Jacobian. Spectra are processed together: parameters
are padded to the batch's largest peak count, unused slots are held fixed, and every step is a
batch of small dense solves.

After the fit a peak is dropped when its height is below ``min_height_sigma`` times the noise
(:func:`engines.roi.peaks.estimate_noise_sigma` of the residual), and a peak whose centre lands
within ``merge_samples`` of a taller one is merged into it (two starts converged on one peak:
the taller takes its height and area). Per peak the result gives centre, height, area, FWHM, the
standard errors of centre and height from the covariance ``sigma^2 (J^T J)^-1``, and whether
its support overlaps a neighbour's. Pure numpy/scipy; no state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.interpolate import CubicSpline

from engines.roi.peaks import estimate_noise_sigma

__all__ = [
    "FIT_PEAK_DTYPE",
    "FitShape",
    "PeakFitConfig",
    "fit_peaks",
    "mark_overlaps",
    "spline_basis",
]

FitShape = Literal["hann", "pvoigt"]

FIT_PEAK_DTYPE = np.dtype(
    [
        ("index", np.float64),  # fitted centre, samples
        ("height", np.float64),  # fitted amplitude above the background, spectrum units
        ("area", np.float64),  # integral of the fitted peak, spectrum units x samples
        ("width", np.float64),  # FWHM, samples
        ("index_sd", np.float64),  # standard error of the centre, samples
        ("height_sd", np.float64),  # standard error of the height, spectrum units
        ("overlaps", np.bool_),  # its support meets a neighbour's
    ]
)

_LN2x4 = 4.0 * np.log(2.0)
_PVOIGT_REACH_FWHM = 3.0  # pseudo-Voigt windows reach +-3 FWHM (Lorentzian tail < 3 %)


@dataclass(frozen=True, kw_only=True)
class PeakFitConfig:
    """Settings of :func:`fit_peaks`.

    ``iterations``: LM steps. ``knots``: background spline knots over the length.
    ``min_height_sigma``: drop fitted peaks lower than this many noise sigmas.
    ``merge_samples``: a peak whose centre is this close to a taller one is the same peak.
    ``max_width_samples``: upper bound of a fitted support width (``w``, not FWHM).
    ``max_shift_samples``: how far a fitted centre may move from its start. The detector
    counts and places; the fit measures: on 420 out-of-distribution spectra (peaks_mixed) a
    free centre (1.5 samples) cost 0.02 peak F1 against the heads' own positions, 0.5 costs
    0.01 (shape misfit moves centres), and a height floor of 2 noise sigmas cost another 0.003.
    """

    shape: FitShape = "hann"
    iterations: int = 8
    knots: int = 7
    min_height_sigma: float = 0.0
    merge_samples: float = 1.0
    max_width_samples: float = 128.0
    max_shift_samples: float = 0.5

    def __post_init__(self) -> None:
        if self.shape not in ("hann", "pvoigt"):
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.iterations < 0 or self.knots < 2:
            raise ValueError("iterations must be >= 0 and knots >= 2")
        if self.max_width_samples < 1.0:
            raise ValueError("max_width_samples must be >= 1")


@functools.lru_cache(maxsize=64)
def spline_basis(length: int, knots: int) -> np.ndarray:
    """(length, knots) cubic-spline basis through ``knots`` evenly spread knots (read-only;
    cached: a service fits spectra of a few lengths over and over)."""
    x = np.linspace(0.0, length - 1.0, knots)
    basis = CubicSpline(x, np.eye(knots), axis=0)(np.arange(length, dtype=np.float64))
    basis.setflags(write=False)
    return basis


def _profile(
    shape: FitShape, u: np.ndarray, w: np.ndarray, eta: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Unit-height profile at offsets ``u`` (samples from the centre) and its derivatives with
    respect to the centre, ``log w`` (and ``eta`` for the pseudo-Voigt)."""
    if shape == "hann":
        a = np.pi * u / (w + 1.0)
        inside = np.abs(a) < np.pi / 2.0
        phi = np.where(inside, np.cos(a) ** 2, 0.0)
        s2a = np.where(inside, np.sin(2.0 * a), 0.0)
        return phi, [s2a * np.pi / (w + 1.0), s2a * a * w / (w + 1.0)]
    fwhm = (w + 1.0) / 2.0
    z = u / fwhm
    g = np.exp(-_LN2x4 * z * z)
    lo = 1.0 / (1.0 + 4.0 * z * z)
    phi = eta * lo + (1.0 - eta) * g
    dphi_dz = eta * (-8.0 * z * lo * lo) + (1.0 - eta) * (-2.0 * _LN2x4 * z * g)
    return phi, [-dphi_dz / fwhm, -dphi_dz * z * w / (w + 1.0), lo - g]


def _unit_area(shape: FitShape, w: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Integral of the unit-height profile, samples."""
    fwhm = (w + 1.0) / 2.0
    if shape == "hann":
        return fwhm  # cos^2 over (w + 1) samples integrates to (w + 1) / 2
    return eta * np.pi / 2.0 * fwhm + (1.0 - eta) * fwhm * np.sqrt(np.pi / _LN2x4)


@dataclass
class _Params:
    """Padded parameters of a batch: (B, K) per peak, (B, knots) background."""

    c: np.ndarray
    logw: np.ndarray
    h: np.ndarray
    eta: np.ndarray
    b: np.ndarray


@dataclass
class _Design:
    """Model values and the pieces of the normal equations at one parameter point."""

    model: np.ndarray  # (B, L)
    first: np.ndarray  # (B, K) first sample of each peak's window
    idx: np.ndarray  # (B, K, W) sample index of the window (clipped into the spectrum)
    cols: np.ndarray  # (B, K, n, W) Jacobian columns of the peak parameters over the window


class _Fitter:
    """The model of one batch: shape, length, window, background basis, and the bounds of the
    parameters (``c_low``/``c_high``: (B, K) of each centre)."""

    def __init__(self, shape: FitShape, length: int, knots: int, window: int, max_w: float,
                 c_low: np.ndarray, c_high: np.ndarray) -> None:
        self.shape = shape
        self.length = length
        self.window = window
        self.max_logw = float(np.log(max_w))
        self.basis = spline_basis(length, knots)
        self.btb = self.basis.T @ self.basis
        self.n_peak_par = 3 if shape == "hann" else 4
        self.c_low = c_low
        self.c_high = c_high

    def design(self, p: _Params, active: np.ndarray) -> _Design:
        n, k = p.c.shape
        first = np.floor(p.c).astype(np.int64) - self.window // 2 + 1
        pos = first[:, :, None] + np.arange(self.window)[None, None, :]
        inside = (pos >= 0) & (pos < self.length) & active[:, :, None]
        idx = np.clip(pos, 0, self.length - 1)
        w = np.exp(p.logw)[:, :, None]
        phi, derivs = _profile(self.shape, pos - p.c[:, :, None], w, p.eta[:, :, None])
        phi = np.where(inside, phi, 0.0)
        h = p.h[:, :, None]
        blocks = [h * derivs[0], h * derivs[1], phi]
        if self.shape == "pvoigt":
            blocks.append(h * derivs[2])
        cols = np.where(inside[:, :, None, :], np.stack(blocks, axis=2), 0.0)
        flat = (idx + (np.arange(n) * self.length)[:, None, None]).reshape(-1)
        peaks = np.bincount(flat, weights=(h * phi).reshape(-1), minlength=n * self.length)
        model = peaks.reshape(n, self.length) + p.b @ self.basis.T
        return _Design(model, first, idx, cols)

    def normal_equations(self, d: _Design, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``J^T J`` (B, P, P) and ``J^T r`` (B, P); P = K * n + knots, peak-major."""
        n, k, npar, win = d.cols.shape
        knots = self.basis.shape[1]
        size = k * npar + knots
        jtj = np.zeros((n, size, size))
        jtr = np.zeros((n, size))
        batch = np.arange(n)[:, None, None]
        r_win = r[batch, d.idx]  # (B, K, W)
        jtr[:, : k * npar] = (d.cols @ r_win[..., None])[..., 0].reshape(n, -1)
        jtr[:, k * npar :] = r @ self.basis
        b_win = self.basis[d.idx]  # (B, K, W, knots)
        pb = (d.cols @ b_win).reshape(n, k * npar, knots)
        jtj[:, : k * npar, k * npar :] = pb
        jtj[:, k * npar :, : k * npar] = pb.transpose(0, 2, 1)
        jtj[:, k * npar :, k * npar :] = self.btb
        # peak x peak: each peak with itself, then the pairs i < m whose windows meet, the
        # window of m read at the offset o = first_m - first_i that lays it over i's window
        par = np.arange(npar)
        own = (np.arange(k)[:, None] * npar + par[None, :]).reshape(-1)
        jtj[:, own[:, None], own[None, :]] = _block_diag(d.cols @ d.cols.transpose(0, 1, 3, 2))
        offset = d.first[:, None, :] - d.first[:, :, None]  # (B, K_i, K_m)
        bi, ii, mm = np.nonzero((np.abs(offset) < win) & np.triu(np.ones((k, k), bool), 1))
        if bi.size:
            rel = np.arange(win)[None, :] - offset[bi, ii, mm][:, None]  # (T, W): in m's window
            inside = (rel >= 0) & (rel < win)
            cm = np.take_along_axis(d.cols[bi, mm], np.clip(rel, 0, win - 1)[:, None, :], axis=2)
            blk = d.cols[bi, ii] @ (cm * inside[:, None, :]).transpose(0, 2, 1)
            rows = (ii[:, None] * npar + par[None, :])[:, :, None]
            cols = (mm[:, None] * npar + par[None, :])[:, None, :]
            jtj[bi[:, None, None], rows, cols] = blk
            jtj[bi[:, None, None], cols.transpose(0, 2, 1), rows.transpose(0, 2, 1)] = (
                blk.transpose(0, 2, 1))
        return jtj, jtr

    def vector(self, p: _Params) -> np.ndarray:
        per_peak = [p.c, p.logw, p.h] + ([p.eta] if self.shape == "pvoigt" else [])
        return np.concatenate([np.stack(per_peak, axis=2).reshape(p.c.shape[0], -1), p.b], axis=1)

    def unpack(self, theta: np.ndarray, k: int) -> _Params:
        n = theta.shape[0]
        per_peak = theta[:, : k * self.n_peak_par].reshape(n, k, self.n_peak_par)
        eta = np.clip(per_peak[:, :, 3], 0.0, 1.0) if self.shape == "pvoigt" else None
        return _Params(
            c=np.clip(per_peak[:, :, 0], self.c_low, self.c_high),
            logw=np.clip(per_peak[:, :, 1], 0.0, self.max_logw),
            h=per_peak[:, :, 2],
            eta=eta if eta is not None else np.full((n, k), 0.5),
            b=theta[:, k * self.n_peak_par :],
        )


def _block_diag(blocks: np.ndarray) -> np.ndarray:
    """(B, K, n, n) blocks -> (B, K n, K n) block-diagonal matrices."""
    n_b, k, npar, _ = blocks.shape
    out = np.zeros((n_b, k, npar, k, npar))
    out[:, np.arange(k), :, np.arange(k), :] = blocks.transpose(1, 0, 2, 3)
    return out.reshape(n_b, k * npar, k * npar)


_PARAM_FIELDS = ("c", "logw", "h", "eta", "b")
_DESIGN_FIELDS = ("model", "first", "idx", "cols")


def _window_samples(shape: FitShape, widths: np.ndarray, length: int) -> int:
    reach = widths.max(initial=1.0) + 2.0
    if shape == "pvoigt":
        reach = _PVOIGT_REACH_FWHM * (widths.max(initial=1.0) + 1.0)
    return int(min(length, 2 * (int(np.ceil(reach / 2.0)) + 1)))


def fit_peaks(
    spectra: np.ndarray,
    starts: list[np.ndarray],
    config: PeakFitConfig | None = None,
) -> list[np.ndarray]:
    """Fit every spectrum of ``spectra`` (B, L) float from its starting peaks.

    ``starts[i]``: structured array with fields ``index`` (centre, samples) and ``width``
    (support width, samples) — e.g. :func:`engines.roi.peak_decode.decode_peaks`.
    Returns one array of dtype :data:`FIT_PEAK_DTYPE` per spectrum, sorted by ``index``.
    """
    cfg = config or PeakFitConfig()
    y = np.asarray(spectra, dtype=np.float64)
    if y.ndim != 2 or len(starts) != y.shape[0]:
        raise ValueError("spectra must be (B, L) with one start table per spectrum")
    n, length = y.shape
    if not any(len(s) for s in starts):
        return [np.zeros(0, FIT_PEAK_DTYPE) for _ in range(n)]
    k = max(len(s) for s in starts)
    c = np.zeros((n, k))
    w = np.full((n, k), 3.0)
    active = np.zeros((n, k), bool)
    for i, s in enumerate(starts):
        order = np.argsort(s["index"], kind="stable")  # neighbours in adjacent slots
        c[i, : len(s)] = s["index"][order]
        w[i, : len(s)] = np.clip(s["width"][order], 1.0, cfg.max_width_samples)
        active[i, : len(s)] = True
    window = _window_samples(cfg.shape, w[active] if active.any() else w, length)
    # the detector counts and places the peaks; the fit refines them near where they were found
    # (a centre free to wander joins a neighbour rather than finding a missed peak)
    fitter = _Fitter(cfg.shape, length, cfg.knots, window, cfg.max_width_samples,
                     c_low=np.maximum(c - cfg.max_shift_samples, 0.0),
                     c_high=np.minimum(c + cfg.max_shift_samples, length - 1.0))
    npar = fitter.n_peak_par
    p = _Params(c=c, logw=np.log(w), h=np.ones((n, k)), eta=np.full((n, k), 0.5),
                b=np.zeros((n, cfg.knots)))
    frozen = np.concatenate(
        [np.repeat(~active, npar, axis=1), np.zeros((n, cfg.knots), bool)], axis=1
    )
    only_linear = frozen.copy()
    only_linear[:, : k * npar] |= np.tile(np.arange(npar) != 2, k)[None, :]

    def solve(d: _Design, theta_frozen: np.ndarray, lam: np.ndarray) -> np.ndarray:
        jtj, jtr = fitter.normal_equations(d, y - d.model)
        diag = np.where(theta_frozen, 1.0, np.maximum(np.diagonal(jtj, axis1=1, axis2=2), 1e-12))
        jtj = np.where(theta_frozen[:, :, None] | theta_frozen[:, None, :], 0.0, jtj)
        eye = np.eye(diag.shape[1])
        a = jtj + (lam[:, None] * diag + theta_frozen)[:, :, None] * eye
        return np.linalg.solve(a, np.where(theta_frozen, 0.0, jtr)[:, :, None])[:, :, 0]

    # heights and background first: the model is linear in them (one exact Gauss-Newton step)
    d = fitter.design(p, active)
    p = fitter.unpack(fitter.vector(p) + solve(d, only_linear, np.full(n, 1e-9)), k)
    d = fitter.design(p, active)
    cost = ((d.model - y) ** 2).sum(axis=1)
    lam = np.full(n, 1e-3)
    for _ in range(cfg.iterations):
        q = fitter.unpack(fitter.vector(p) + solve(d, frozen, lam), k)
        dq = fitter.design(q, active)
        q_cost = ((dq.model - y) ** 2).sum(axis=1)
        better = q_cost < cost
        pick = better[:, None]
        p = _Params(*(np.where(pick, getattr(q, f), getattr(p, f)) for f in _PARAM_FIELDS))
        d = _Design(*(np.where(better.reshape(-1, *[1] * (getattr(d, f).ndim - 1)),
                               getattr(dq, f), getattr(d, f)) for f in _DESIGN_FIELDS))
        cost = np.where(better, q_cost, cost)
        lam = np.where(better, lam * 0.3, lam * 10.0)

    dof = np.maximum(length - active.sum(axis=1) * npar - cfg.knots, 1)
    sigma2 = cost / dof
    jtj, _ = fitter.normal_equations(d, y - d.model)
    jtj = np.where(frozen[:, :, None] | frozen[:, None, :], 0.0, jtj)
    jtj += np.eye(jtj.shape[1]) * (frozen[:, :, None] + 1e-12)
    var = np.diagonal(np.linalg.inv(jtj), axis1=1, axis2=2) * sigma2[:, None]
    sd = np.sqrt(np.maximum(var, 0.0))[:, : k * npar].reshape(n, k, npar)
    width = np.exp(p.logw)
    # the noise of the residual from its second differences: a smooth misfit of the background
    # (a real spectrum is no 7-knot spline) must not count as noise and hide true peaks
    noise = np.array([estimate_noise_sigma(r) for r in y - d.model])
    keep = active & (p.h >= cfg.min_height_sigma * noise[:, None])
    area = p.h * _unit_area(cfg.shape, width, p.eta)
    # two starts that converged on one peak share it: of neighbours closer than merge_samples
    # the taller takes the shorter's height and area (slots are in centre order, and a fit
    # rarely swaps neighbours)
    order = np.argsort(np.where(keep, p.c, np.inf), axis=1, kind="stable")
    c_s, h_s, a_s, kept_s = (np.take_along_axis(v, order, axis=1) for v in (p.c, p.h, area, keep))
    close = kept_s[:, 1:] & kept_s[:, :-1] & (np.diff(c_s, axis=1) <= cfg.merge_samples)
    left = close & (h_s[:, :-1] >= h_s[:, 1:])  # the left one absorbs its right neighbour
    right = close & ~left
    drop = np.zeros_like(keep)
    drop[:, 1:] |= left
    drop[:, :-1] |= right
    gain_h, gain_a = np.zeros_like(h_s), np.zeros_like(a_s)
    gain_h[:, :-1] += np.where(left, h_s[:, 1:], 0.0)
    gain_h[:, 1:] += np.where(right, h_s[:, :-1], 0.0)
    gain_a[:, :-1] += np.where(left, a_s[:, 1:], 0.0)
    gain_a[:, 1:] += np.where(right, a_s[:, :-1], 0.0)
    for values, gain in ((p.h, gain_h), (area, gain_a)):
        np.put_along_axis(values, order, np.take_along_axis(values, order, axis=1) + gain, axis=1)
    np.put_along_axis(keep, order, kept_s & ~drop, axis=1)

    table = np.zeros((n, k), FIT_PEAK_DTYPE)
    table["index"] = p.c
    table["height"] = p.h
    table["area"] = area
    table["width"] = (width + 1.0) / 2.0
    table["index_sd"] = sd[:, :, 0]
    table["height_sd"] = sd[:, :, 2]
    return [mark_overlaps(np.sort(table[i, keep[i]], order="index")) for i in range(n)]


def mark_overlaps(t: np.ndarray) -> np.ndarray:
    """Set ``overlaps`` on the peaks of ``t`` (sorted by ``index``) whose support meets a
    neighbour's: supports are taken as ``index +- width`` (the half-width ``(w + 1) / 2`` of a
    Hann support is its FWHM). Returns ``t``."""
    if t.size > 1:
        touch = (t["index"][1:] - t["width"][1:]) < (t["index"][:-1] + t["width"][:-1])
        t["overlaps"][1:] |= touch
        t["overlaps"][:-1] |= touch
    return t
