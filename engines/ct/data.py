"""The CT training and held-out data: phantom slices scanned at low dose and at dose 1.

Anatomy: :func:`devices.ct_phantom.anatomical_slice` (500 mm FOV), alternately abdomen and
thorax. Scans: :mod:`devices.ct_dose` (projection-space Poisson + electronic noise, FBP; 720
views at 512², proportionally fewer on smaller grids), the reference at dose 1 and the low-dose
images at doses drawn uniformly from [0.10, 0.50], all from one noiseless projection; each
image has its own noise (the scan's noise stream is seeded by the phantom's seed and the dose).

Grid: 512² (0.98 mm pixels), the grid the models serve. Measured (same seed and steps,
the residual UNet, 600 steps on 32 phantoms, scored on 512² slices at dose 0.25): training on
512² rather than 256² phantoms gained +0.09 dB on 4 validation phantoms and +0.37 / +0.30 dB
on the real ``693_UNCR`` / ``explicit_VR-UN`` slices (anatomy and noise grain at the scale
served). It costs ~8 s per phantom (projection, reference and 3 doses; ~0.9 s at 256²), a
one-time ~20 min for 160 phantoms on one core (``workers=2``: about half), then cached.

Photon-starved phantoms are left out. The chain has no bowtie filter and no tube-current
modulation, so a wide abdomen's lateral rays keep only a few photons and electronic noise takes
over (measured at 256², 40 phantoms: the quarter/full-dose noise ratio, ~2 where quantum noise
dominates, reached 2.8-3.8 on the abdomens 338-398 mm wide, with quarter-dose RMSE 97-239 HU
against a median of 44 HU). Such slices would dominate an MSE loss with streaks no clinical
scanner makes. A phantom is kept when its most attenuated ray still gets
:attr:`CtDataConfig.min_counts` (20) photons at the lowest dose (0.10): ``i0 * 0.10 *
exp(-max p) >= 20``, i.e. ``max p <= 6.91``. On those 40 phantoms this drops 10 (8 of them with
a noise ratio of 2.5-3.8, plus two thoraxes 391-402 mm wide); the kept ones have noise ratios
1.98-2.55. Held-out phantoms follow the same rule.

Phantom seeds never overlap between purposes: ``phantom_seed = 3 * (seed * 10**6 + k) + r``
with ``r`` 0 for training, 1 for validation, 2 for test (candidate ``k`` of a stream; one
stream per region, so every set is half abdomen, half thorax whatever is dropped).

Cache: a training set is kept as ``.npz`` under ``.data/ct/`` (the repository's; HU rounded to
int16, a quantisation SD of 0.29 HU beside the reference's own ~25 HU of noise), named by its
configuration, seed and count; a rerun loads it instead of simulating again.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from devices.ct_dose import (
    DEFAULT_ELECTRONIC_SD,
    DEFAULT_I0,
    DEFAULT_VIEWS,
    line_integrals,
    noisy_line_integrals,
    reconstruct_hu,
)
from devices.ct_phantom import PhantomSlice, Region, anatomical_slice
from engines import training
from engines.ct.specs import CT_UNITS

__all__ = [
    "CACHE_DIR",
    "CtDataConfig",
    "CtPairs",
    "PatchSampler",
    "Purpose",
    "ScannedPhantom",
    "cache_path",
    "load_pairs",
    "phantom_seed",
    "scanned_phantoms",
    "simulate_pairs",
]

Purpose = Literal["train", "validation", "test"]
_PURPOSE_RESIDUE = {"train": 0, "validation": 1, "test": 2}
_REGIONS: tuple[Region, ...] = ("abdomen", "thorax")
_CANDIDATES_PER_STREAM = 10**6
_DOSE_TAG = 41
_CACHE_VERSION = 1

#: Where generated training sets are kept (ignored by git).
CACHE_DIR = Path(__file__).resolve().parents[2] / ".data" / "ct"


@dataclass(frozen=True, kw_only=True)
class CtDataConfig:
    """How phantom pairs are made. ``size_px``: slice grid over the 500 mm FOV;
    ``views``: projection angles (default ``720 * size_px / 512``); ``doses_per_phantom``
    low-dose images per phantom at doses uniform in ``dose_range``; ``min_counts``: photons
    the most attenuated ray must keep at the lowest dose."""

    size_px: int = 512
    views: int | None = None
    doses_per_phantom: int = 3
    dose_range: tuple[float, float] = (0.10, 0.50)
    i0: float = DEFAULT_I0
    electronic_sd: float = DEFAULT_ELECTRONIC_SD
    min_counts: float = 20.0

    @property
    def n_views(self) -> int:
        return self.views if self.views is not None else round(DEFAULT_VIEWS * self.size_px / 512)

    @property
    def max_line_integral(self) -> float:
        """Largest line integral a kept phantom may have (dimensionless)."""
        return math.log(self.i0 * self.dose_range[0] / self.min_counts)


@dataclass(frozen=True, kw_only=True)
class ScannedPhantom:
    """One phantom and its scans: ``reference`` float32 (n, n) HU at dose 1, ``low[d]`` float32
    (n, n) HU at dose ``d``; ``index`` its place in the set."""

    index: int
    phantom: PhantomSlice
    reference: np.ndarray
    low: dict[float, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class CtPairs:
    """A training set in memory. ``low`` int16 ``(n, k, H, W)`` HU, ``reference`` int16
    ``(n, H, W)`` HU, ``doses`` float32 ``(n, k)``, ``body`` bool ``(n, H, W)``,
    ``phantom_seeds`` int64 ``(n,)``, ``regions`` the region of each, ``pixel_mm`` the grid."""

    low: np.ndarray
    reference: np.ndarray
    doses: np.ndarray
    body: np.ndarray
    phantom_seeds: np.ndarray
    regions: tuple[str, ...]
    pixel_mm: float

    def __len__(self) -> int:
        return int(self.reference.shape[0])


def phantom_seed(purpose: Purpose, region: Region, k: int, seed: int = 0) -> int:
    """The phantom seed of candidate ``k`` of ``purpose``'s ``region`` stream (see the module
    docstring: purposes never share a seed)."""
    if not 0 <= k < _CANDIDATES_PER_STREAM or seed < 0:
        raise ValueError(f"candidate {k} or seed {seed} out of range")
    stream = 2 * seed + _REGIONS.index(region)
    return 3 * (stream * _CANDIDATES_PER_STREAM + k) + _PURPOSE_RESIDUE[purpose]


def _doses_for(config: CtDataConfig, pseed: int) -> tuple[float, ...]:
    rng = training.data_rng(pseed, _DOSE_TAG)
    lo, hi = config.dose_range
    draws = rng.uniform(lo, hi, config.doses_per_phantom)
    return tuple(float(np.round(d, 4)) for d in draws)


def _scan_candidate(
    config: CtDataConfig, purpose: Purpose, region: Region, k: int, seed: int,
    doses: tuple[float, ...] | None,
) -> tuple[PhantomSlice, np.ndarray, dict[float, np.ndarray]] | None:
    """Scan candidate ``k``; ``None`` if it is photon-starved. ``doses=None``: drawn."""
    pseed = phantom_seed(purpose, region, k, seed)
    phantom = anatomical_slice(config.size_px, seed=pseed, region=region)
    p = line_integrals(phantom.hu, phantom.pixel_mm, views=config.n_views)
    if float(p.max()) > config.max_line_integral:
        return None
    wanted = doses if doses is not None else _doses_for(config, pseed)

    def scan(dose: float) -> np.ndarray:
        p_hat = noisy_line_integrals(p, dose=dose, seed=pseed, i0=config.i0,
                                     electronic_sd=config.electronic_sd)
        return reconstruct_hu(p_hat, phantom.pixel_mm)

    return phantom, scan(1.0), {d: scan(d) for d in wanted}


def scanned_phantoms(
    purpose: Purpose, n: int, *, config: CtDataConfig, seed: int = 0,
    doses: Sequence[float] | None = None, workers: int = 1,
) -> Iterator[ScannedPhantom]:
    """The first ``n`` kept phantoms of ``purpose`` (abdomen, thorax, abdomen, ...), scanned.

    ``doses``: the low doses of every phantom (evaluation); ``None`` draws
    ``config.doses_per_phantom`` per phantom (training). ``workers > 1`` scans candidates in
    that many processes; the result does not depend on it.
    """
    fixed = None if doses is None else tuple(float(d) for d in doses)
    # Scanned but not yet handed out, per region (handed-out slices are not kept: memory).
    found: list[deque[tuple[PhantomSlice, np.ndarray, dict[float, np.ndarray]]]] = [deque(),
                                                                                 deque()]
    next_k = [0, 0]
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for i in range(n):
            r = i % 2
            while not found[r]:
                jobs = [(config, purpose, _REGIONS[r], next_k[r] + j, seed, fixed)
                        for j in range(max(1, workers))]
                next_k[r] += len(jobs)
                if pool is None:
                    results = [_scan_candidate(*job) for job in jobs]
                else:
                    results = list(pool.map(_scan_star, jobs))
                found[r].extend(res for res in results if res is not None)
            phantom, reference, low = found[r].popleft()
            yield ScannedPhantom(index=i, phantom=phantom, reference=reference, low=low)
    finally:
        if pool is not None:
            pool.shutdown()


def _scan_star(
    job: tuple[CtDataConfig, Purpose, Region, int, int, tuple[float, ...] | None],
) -> tuple[PhantomSlice, np.ndarray, dict[float, np.ndarray]] | None:
    return _scan_candidate(*job)


def simulate_pairs(
    purpose: Purpose, n: int, *, config: CtDataConfig, seed: int = 0, workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> CtPairs:
    """Simulate ``n`` phantoms of ``purpose`` as a :class:`CtPairs` (no cache)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    size, k = config.size_px, config.doses_per_phantom
    low = np.empty((n, k, size, size), dtype=np.int16)
    reference = np.empty((n, size, size), dtype=np.int16)
    doses = np.empty((n, k), dtype=np.float32)
    body = np.empty((n, size, size), dtype=bool)
    seeds = np.empty(n, dtype=np.int64)
    regions: list[str] = []
    pixel_mm = 0.0
    for item in scanned_phantoms(purpose, n, config=config, seed=seed, workers=workers):
        i = item.index
        reference[i] = _int16(item.reference)
        for j, (d, image) in enumerate(item.low.items()):
            doses[i, j] = d
            low[i, j] = _int16(image)
        body[i] = item.phantom.body
        seeds[i] = item.phantom.seed
        regions.append(item.phantom.region)
        pixel_mm = item.phantom.pixel_mm
        if progress is not None:
            progress(i + 1)
    return CtPairs(low=low, reference=reference, doses=doses, body=body, phantom_seeds=seeds,
                   regions=tuple(regions), pixel_mm=pixel_mm)


def _int16(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(hu), -32768, 32767).astype(np.int16)


def cache_path(config: CtDataConfig, n: int, seed: int, cache_dir: Path = CACHE_DIR) -> Path:
    """Where the training set of ``config``, ``n`` phantoms and ``seed`` is cached."""
    key = json.dumps({"v": _CACHE_VERSION, "config": asdict(config)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return cache_dir / f"train_seed{seed}_n{n}_px{config.size_px}_{digest}.npz"


def load_pairs(
    n: int, *, config: CtDataConfig, seed: int, cache_dir: Path | None = CACHE_DIR,
    workers: int = 1, log: Callable[[str], None] | None = None,
) -> CtPairs:
    """The training set of ``n`` phantoms: from the cache if there, else simulated and cached
    (``cache_dir=None``: never cached)."""
    path = None if cache_dir is None else cache_path(config, n, seed, Path(cache_dir))
    if path is not None and path.exists():
        with np.load(path) as z:
            return CtPairs(low=z["low"], reference=z["reference"], doses=z["doses"],
                           body=np.unpackbits(z["body"], axis=-1)[..., :config.size_px]
                           .astype(bool),
                           phantom_seeds=z["phantom_seeds"],
                           regions=tuple(str(r) for r in z["regions"]),
                           pixel_mm=float(z["pixel_mm"]))
    t0 = time.perf_counter()

    def report(done: int) -> None:
        if log is not None and (done % 16 == 0 or done == n):
            log(f"ct data: {done}/{n} phantoms at {config.size_px}² "
                f"({time.perf_counter() - t0:.0f} s)")

    pairs = simulate_pairs("train", n, config=config, seed=seed, workers=workers,
                           progress=report)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, low=pairs.low, reference=pairs.reference, doses=pairs.doses,
                 body=np.packbits(pairs.body, axis=-1), phantom_seeds=pairs.phantom_seeds,
                 regions=np.array(pairs.regions), pixel_mm=np.float64(pairs.pixel_mm))
        tmp.replace(path)
    return pairs


class PatchSampler:
    """Random training patches from a :class:`CtPairs`, in the models' units.

    Each patch: a phantom and one of its doses uniformly, a centre uniformly among its body
    pixels (the patch clipped into the slice), the same random left-right and up-down flips on
    low-dose input and reference. Deterministic given ``rng``.
    """

    def __init__(self, pairs: CtPairs, *, patch_px: int, rng: np.random.Generator) -> None:
        size = pairs.reference.shape[-1]
        if not 1 <= patch_px <= size:
            raise ValueError(f"patch_px must be in 1..{size}, got {patch_px}")
        self._pairs = pairs
        self._patch = patch_px
        self._rng = rng
        self._body = [np.flatnonzero(b) for b in pairs.body]
        if any(b.size == 0 for b in self._body):
            raise ValueError("a phantom without body pixels")

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(low, reference)``: float32 ``(n, 1, p, p)`` each, normalised HU."""
        pairs, p, rng = self._pairs, self._patch, self._rng
        size = pairs.reference.shape[-1]
        k = pairs.low.shape[1]
        low = np.empty((n, 1, p, p), dtype=np.float32)
        ref = np.empty((n, 1, p, p), dtype=np.float32)
        for b in range(n):
            i = int(rng.integers(len(pairs)))
            j = int(rng.integers(k))
            centre = int(self._body[i][rng.integers(self._body[i].size)])
            r = min(max(centre // size - p // 2, 0), size - p)
            c = min(max(centre % size - p // 2, 0), size - p)
            x = pairs.low[i, j, r:r + p, c:c + p]
            y = pairs.reference[i, r:r + p, c:c + p]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            if rng.random() < 0.5:
                x, y = x[::-1], y[::-1]
            low[b, 0] = CT_UNITS.to_model(x)
            ref[b, 0] = CT_UNITS.to_model(y)
        return low, ref
