"""Simulated spectra with ground-truth regions of interest (ROI) — the paper's generator.

Paper protocol (PAPERS.md §1), reproduced by the default :class:`SpectrumSimConfig`:

- length 512 samples; 8–16 peaks per spectrum, each a Hann window whose support is 5–31 samples
  wide, at a uniformly random position with a random height;
- background: a cubic spline (``scipy.interpolate.CubicSpline``) through 7 knots evenly spread
  over the length, knot values random;
- additive Gaussian white noise;
- the peak train randomly mirrored left/right (``start -> L - end``); the background randomly
  flipped up/down and left/right;
- min-max normalised to [0, 1]; ground-truth ROI = union of the supports of the peaks.

The paper gives no noise level or height range. Choices made here, in raw units with the noise
standard deviation ``sigma = 1``:

- per-spectrum SNR := strongest peak amplitude / sigma, drawn uniformly **in dB** from
  ``snr_db`` (default 30–50 dB, i.e. 32–316 sigma); a peak's recorded ``height`` and
  ``snr_db`` are those of its sampled apex, which for even widths is up to 5 % (0.44 dB) below
  its amplitude;
- the other peaks get heights uniform in 10–100 % of the strongest one (``height_rel``), so a
  single peak lies between ~10 and 50 dB; the weakest ones are ~3 sigma high;
- background: knot values uniform in ``[0, A]`` with ``A`` uniform in 0–2x the strongest peak
  height (``background_rel``), so the baseline is comparable in size to the peaks.

Peak shape and ROI. The Hann window of support ``w`` is ``scipy.signal.windows.hann(w + 2)[1:-1]``
(``sin^2(pi (j + 1) / (w + 1))``, j = 0..w-1): every one of its ``w`` samples is nonzero, so its
ROI equals its support and can be observed. The out-of-distribution shapes ``"gauss"``,
``"lorentz"`` and ``"voigt"`` (pseudo-Voigt, 50/50 Gauss/Lorentz of equal FWHM) have infinite
tails: their support and ROI are defined as where the profile exceeds 1 % of its height
(``support_level``); ``width`` is that support in samples, and the profile is cut to zero outside
it (the cut is at most 1 % of a peak's height, below the noise for all but the strongest peaks).

Length. ``n_peaks`` is the count range for a 512-sample spectrum; for other lengths it is
scaled by ``length / 512`` so the peak density stays the paper's. ``n_peaks=(0, 0)`` gives
peak-free spectra (background + noise only, SNR undefined: ``snr_db`` is NaN).

Overlap. ``"allow"`` (paper: independent uniform positions, overlaps happen by chance),
``"avoid"`` (supports of one spectrum never touch), ``"force"`` (every second peak is centred
inside the support of the peak before it).

Spikes. ``spikes=(a, b)`` adds a..b single-sample spikes (cosmic-ray like) per spectrum, of
height ``spike_rel`` times the strongest peak, of either sign; they are NOT peaks and never ROI.
Their sample indices are returned in :attr:`SpectrumBatch.spikes`.

Everything random is drawn from the ``rng`` passed in: same generator state, same batch.
Pure numpy/scipy, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.interpolate import CubicSpline

__all__ = ["PEAK_DTYPE", "SpectrumBatch", "SpectrumSimConfig", "peak_profiles", "simulate"]

PEAK_DTYPE = np.dtype(
    [
        ("center", np.float64),  # sample position of the apex (support midpoint)
        ("height", np.float64),  # apex height above background, normalised units
        ("width", np.int64),  # support width, samples
        ("start", np.int64),  # first sample of the support
        ("end", np.int64),  # one past the last sample of the support
        ("area", np.float64),  # sum of the peak profile, normalised units x samples
        ("snr_db", np.float64),  # 20 log10(height / noise sigma)
    ]
)

Shape = Literal["hann", "gauss", "lorentz", "voigt"]
Overlap = Literal["allow", "avoid", "force"]

_N_KNOTS = 7
_REFERENCE_LENGTH = 512


@dataclass(frozen=True, kw_only=True)
class SpectrumSimConfig:
    """Simulator settings; defaults are the paper's protocol (see module docstring).

    Ranges are inclusive ``(low, high)``. Integer ranges: samples or counts; ``snr_db`` in dB;
    ``*_rel`` fractions of the strongest peak's height.
    """

    length: int = 512
    n_peaks: tuple[int, int] = (8, 16)  # per 512 samples; scaled with length
    width: tuple[int, int] = (5, 31)  # support, samples
    snr_db: tuple[float, float] = (30.0, 50.0)  # strongest peak / noise sigma
    height_rel: tuple[float, float] = (0.1, 1.0)
    background_rel: tuple[float, float] = (0.0, 2.0)
    shape: Shape = "hann"
    support_level: float = 0.01  # non-Hann shapes: ROI where profile > level * height
    overlap: Overlap = "allow"
    spikes: tuple[int, int] = (0, 0)
    spike_rel: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        if not 16 <= self.length <= 1 << 16:
            raise ValueError(f"length must be in 16..65536, got {self.length}")
        for name in (
            "n_peaks",
            "width",
            "snr_db",
            "height_rel",
            "background_rel",
            "spikes",
            "spike_rel",
        ):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"{name} must be 0 <= low <= high, got {(lo, hi)}")
        if self.width[0] < 1 or self.width[1] > self.length:
            raise ValueError(f"width must be within 1..length, got {self.width}")
        if self.shape not in ("hann", "gauss", "lorentz", "voigt"):
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.overlap not in ("allow", "avoid", "force"):
            raise ValueError(f"unknown overlap {self.overlap!r}")
        if not 0.0 < self.support_level < 1.0:
            raise ValueError("support_level must be in (0, 1)")

    def peak_count_range(self) -> tuple[int, int]:
        """``n_peaks`` scaled to this length (density of the paper's 512-sample spectra)."""
        scale = self.length / _REFERENCE_LENGTH
        return round(self.n_peaks[0] * scale), round(self.n_peaks[1] * scale)


@dataclass(frozen=True)
class SpectrumBatch:
    """A batch of ``n`` simulated spectra of length ``L``.

    ``spectra``: (n, L) float32 in [0, 1]. ``roi``: (n, L) bool, union of peak supports.
    ``peaks``: one structured array (dtype :data:`PEAK_DTYPE`) per spectrum, sorted by start.
    ``snr_db``: (n,) float64, strongest peak / noise sigma in dB (NaN for peak-free spectra).
    ``noise_sigma``: (n,) float64, noise standard deviation in normalised units.
    ``spikes``: one int64 index array per spectrum (empty unless spikes were asked for).
    """

    spectra: np.ndarray
    roi: np.ndarray
    peaks: list[np.ndarray]
    snr_db: np.ndarray
    noise_sigma: np.ndarray
    spikes: list[np.ndarray]


def _unit_profile(shape: str, x: np.ndarray) -> np.ndarray:
    """Peak profile of unit FWHM and unit height at offsets ``x`` (in FWHMs) from the apex."""
    gauss = np.exp(-4.0 * np.log(2.0) * x**2)
    lorentz = 1.0 / (1.0 + 4.0 * x**2)
    if shape == "gauss":
        return gauss
    if shape == "lorentz":
        return lorentz
    return 0.5 * gauss + 0.5 * lorentz  # pseudo-Voigt


def _half_support(shape: str, level: float) -> float:
    """Offset (in FWHMs) where the unit profile falls to ``level``: half the support."""
    if shape == "gauss":
        return float(np.sqrt(np.log(1.0 / level) / (4.0 * np.log(2.0))))
    if shape == "lorentz":
        return float(0.5 * np.sqrt(1.0 / level - 1.0))
    lo, hi = 0.0, 0.5 * np.sqrt(1.0 / level)  # profile is decreasing: bisect
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _unit_profile(shape, np.array(mid)) > level:
            lo = mid
        else:
            hi = mid
    return lo


def peak_profiles(shape: str, level: float, widths: np.ndarray, w_max: int) -> np.ndarray:
    """(P, w_max) unit-height profiles of ``shape`` over supports of ``widths`` samples (a
    non-Hann support is where the profile exceeds ``level``); zero past each width."""
    j = np.arange(w_max, dtype=np.float64)[None, :]
    w = widths.astype(np.float64)[:, None]
    inside = j < w
    if shape == "hann":
        prof = np.sin(np.pi * (j + 1.0) / (w + 1.0)) ** 2
    else:
        # support of w samples spans w sample-widths; its half (w / 2) is where the profile
        # reaches `level`, which fixes the FWHM
        fwhm = (w / 2.0) / _half_support(shape, level)
        prof = _unit_profile(shape, (j - (w - 1.0) / 2.0) / fwhm)
    return np.where(inside, prof, 0.0)


def _positions(
    counts: np.ndarray, widths: np.ndarray, length: int, overlap: str, rng: np.random.Generator
) -> np.ndarray:
    """Start sample of every peak (flat over the batch, grouped by spectrum)."""
    if overlap == "allow":
        return (rng.random(widths.size) * (length - widths + 1)).astype(np.int64)
    starts = np.empty(widths.size, dtype=np.int64)
    first = 0
    for k in counts:
        w = widths[first : first + k]
        if overlap == "avoid":
            # k supports in a random order, separated by random non-negative gaps (≥1 so they
            # never touch) that share the free space uniformly
            free = length - int(w.sum()) - (k - 1)
            if free < 0:
                raise ValueError("overlap='avoid': peaks do not fit in the spectrum")
            order = rng.permutation(k)  # left-to-right order independent of peak index
            wo = w[order]
            cuts = np.sort(rng.integers(0, free + 1, size=k))
            s = cuts + np.concatenate(([0], np.cumsum(wo[:-1] + 1)))
            starts[first + order] = s
        else:  # force: odd peaks centred inside the support of the peak before them
            s = (rng.random(k) * (length - w + 1)).astype(np.int64)
            for i in range(1, k, 2):
                c = s[i - 1] + rng.integers(0, w[i - 1])
                s[i] = np.clip(c - w[i] // 2, 0, length - w[i])
            starts[first : first + k] = s
        first += k
    return starts


def simulate(
    n: int, *, config: SpectrumSimConfig | None = None, rng: np.random.Generator
) -> SpectrumBatch:
    """Simulate ``n`` spectra. Deterministic given the state of ``rng``.

    Returns a :class:`SpectrumBatch` (spectra (n, L) float32 in [0, 1], roi (n, L) bool, ...).
    """
    cfg = config or SpectrumSimConfig()
    length = cfg.length
    sigma = 1.0  # raw units: everything is relative to the noise

    lo, hi = cfg.peak_count_range()
    counts = rng.integers(lo, hi + 1, size=n)
    total = int(counts.sum())
    owner = np.repeat(np.arange(n), counts)

    snr_db = rng.uniform(cfg.snr_db[0], cfg.snr_db[1], size=n)
    top = sigma * 10.0 ** (snr_db / 20.0)  # strongest peak height per spectrum, raw units

    widths = rng.integers(cfg.width[0], cfg.width[1] + 1, size=total)
    starts = _positions(counts, widths, length, cfg.overlap, rng)
    mirror = rng.random(n) < 0.5
    m = mirror[owner]
    starts = np.where(m, length - (starts + widths), starts)

    rel = rng.uniform(cfg.height_rel[0], cfg.height_rel[1], size=total)
    # the first peak of each spectrum is the strongest: the SNR is defined by it
    firsts = np.concatenate(([0], np.cumsum(counts)[:-1]))[counts > 0]
    rel[firsts] = 1.0
    heights = top[owner] * rel

    w_max = int(widths.max()) if total else 1
    prof = peak_profiles(cfg.shape, cfg.support_level, widths, w_max)  # (P, w_max)
    cols = starts[:, None] + np.arange(w_max)[None, :]
    valid = prof > 0.0
    flat = (owner[:, None] * length + np.minimum(cols, length - 1))[valid]
    peak_sum = np.bincount(
        flat, weights=(prof * heights[:, None])[valid], minlength=n * length
    ).reshape(n, length)
    roi = np.bincount(flat, minlength=n * length).reshape(n, length) > 0

    # background: cubic spline through 7 knots evenly spread over the length
    amp = rng.uniform(cfg.background_rel[0], cfg.background_rel[1], size=n) * top
    knots_y = rng.random((_N_KNOTS, n)) * amp[None, :]
    knots_x = np.linspace(0.0, length - 1.0, _N_KNOTS)
    background = CubicSpline(knots_x, knots_y, axis=0)(np.arange(length, dtype=np.float64)).T
    flip_ud = rng.random(n) < 0.5
    flip_lr = rng.random(n) < 0.5
    background = np.where(flip_ud[:, None], -background, background)
    background = np.where(flip_lr[:, None], background[:, ::-1], background)

    raw = peak_sum + background + rng.normal(0.0, sigma, size=(n, length))

    spike_counts = rng.integers(cfg.spikes[0], cfg.spikes[1] + 1, size=n)
    spike_list: list[np.ndarray] = []
    for i, k in enumerate(spike_counts):
        idx = rng.choice(length, size=min(int(k), length), replace=False).astype(np.int64)
        if idx.size:
            sign = np.where(rng.random(idx.size) < 0.5, -1.0, 1.0)
            raw[i, idx] += sign * rng.uniform(*cfg.spike_rel, size=idx.size) * top[i]
        spike_list.append(np.sort(idx))

    lo_v = raw.min(axis=1, keepdims=True)
    span = raw.max(axis=1, keepdims=True) - lo_v
    span = np.where(span > 0, span, 1.0)
    spectra = ((raw - lo_v) / span).astype(np.float32)
    scale = span[:, 0]

    peaks_flat = np.empty(total, dtype=PEAK_DTYPE)
    peaks_flat["start"] = starts
    peaks_flat["end"] = starts + widths
    peaks_flat["width"] = widths
    peaks_flat["center"] = starts + (widths - 1) / 2.0
    # height = the apex as sampled (an even-width Hann peak's two middle samples sit just below
    # its amplitude), so it is what a reader of the spectrum can measure
    apex = heights * prof.max(axis=1) if total else heights
    peaks_flat["height"] = apex / scale[owner]
    peaks_flat["area"] = prof.sum(axis=1) * heights / scale[owner]
    peaks_flat["snr_db"] = 20.0 * np.log10(apex / sigma)
    bounds = np.cumsum(counts)[:-1]
    peaks = [np.sort(p, order="start") for p in np.split(peaks_flat, bounds)]

    return SpectrumBatch(
        spectra=spectra,
        roi=roi,
        peaks=peaks,
        snr_db=np.where(counts > 0, snr_db, np.nan),
        noise_sigma=sigma / scale,
        spikes=spike_list,
    )
