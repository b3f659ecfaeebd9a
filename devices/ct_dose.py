"""Low-dose CT simulated in projection space, and the normal-dose reference through the same chain.

The recipe of DATA.md ("CT / PET / volumes"), never noise added to the image:

1. HU to linear attenuation: ``mu = MU_WATER_PER_MM * (1 + HU / 1000)`` per mm, clipped at 0;
2. line integrals ``p = radon(mu, theta) * pixel_mm`` (dimensionless), ``views`` angles evenly
   over 180° (``skimage.transform.radon``, ``circle=True``: the scan covers the image's inscribed
   circle, and whatever lies outside it is not scanned: its mu is set to 0 first);
3. detected counts ``N = Poisson(I0 * dose * exp(-p)) + Normal(0, electronic_sd)``;
4. ``p_hat = -ln(max(N, 1) / (I0 * dose))``;
5. filtered back-projection (``skimage.transform.iradon``, ramp filter, linear interpolation)
   of ``p_hat / pixel_mm``, back to HU. Outside the scanned circle the image reads -1000 HU.

The reference is the same chain at dose 1, so low-dose and reference images share the chain's
resolution; each has its own quantum noise (two scans), as in a real low-dose / normal-dose pair.

Units and geometry. ``pixel_mm`` keeps the physics: ``p`` is the attenuation along a ray in the
patient, whatever the grid. The detector has one bin per pixel column (bin width ``pixel_mm``);
``i0`` is the photons per detector bin per view with nothing in the beam, ``dose`` scales it.
For fast tests and training data use a smaller grid over the same FOV (e.g. 256² with 1.95 mm
pixels, :func:`devices.ct_phantom.anatomical_slice` does this by default) and proportionally
fewer views (360 at 256², 720 at 512²). With the same ``i0`` such a scan has half the fluence
per mm and half the views, but its pixels are twice as wide: its noise SD is about 0.7 times
that of the 512² scan (measured: full-dose SD 17.5 vs 25.0 HU, medians over phantom slices).

Calibration, with ``i0 = 2e5`` and ``electronic_sd = 10`` (``python -m devices.ct_dose
--size 512 --seeds 8`` prints these figures as JSON; noise SD is scan minus noiseless chain in
the phantom's uniform regions):

- quarter-dose vs full-dose RMSE inside the body at 512²: 60.6 HU on pydicom-data's real
  ``693_UNCR.dcm`` (0.48 mm pixels, 200 mm wide), DATA.md's figure; on phantom slices (0.98 mm
  pixels) median 47 HU, 35-93 HU for bodies 254-393 mm wide;
- quarter/full noise SD ratio: median 2.15 (2.09-2.38), about ``sqrt(1 / dose)`` as quantum
  noise dominates; it rises where rays are starved and the electronic noise takes over: a
  398 mm wide abdomen gives a ratio of 4.0 and an RMSE of 342 HU (its lateral rays keep down
  to 35 counts at full dose, 9 at a quarter). The chain has no bowtie filter and no tube-current
  modulation;
- mean HU bias of the full-dose scan in uniform regions: below 1 HU.

Speed, one core of a shared machine: ``radon`` at 512² × 720 views takes about 2.3 s, the noise
and one ``iradon`` about 1.1 s per dose; the noiseless sinogram is the same for every dose, so
:func:`low_and_reference` projects once and pays only the noise and one reconstruction per
dose (about 4.6 s for a reference and a quarter-dose image). At 256² × 360 views: 0.29 s and
0.14 s.

Determinism. The noise of a scan at ``dose`` comes from a stream seeded by ``(seed, dose)``:
:func:`simulate_scan` and :func:`low_and_reference` with the same seed give identical images for
the same dose. Pure numpy/scikit-image, no torch.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from skimage.transform import iradon, radon

from devices.ct_phantom import anatomical_slice
from devices.errors import ConfigError, VolumeError

__all__ = [
    "DEFAULT_ELECTRONIC_SD",
    "DEFAULT_I0",
    "DEFAULT_VIEWS",
    "MU_WATER_PER_MM",
    "DosePair",
    "line_integrals",
    "low_and_reference",
    "noisy_line_integrals",
    "reconstruct_hu",
    "simulate_scan",
]

MU_WATER_PER_MM = 0.0194
DEFAULT_I0 = 2e5
DEFAULT_VIEWS = 720
DEFAULT_ELECTRONIC_SD = 10.0
_MIN_SIZE = 16


@dataclass(frozen=True, kw_only=True)
class DosePair:
    """A normal-dose reference and the low-dose images of the same anatomy.

    ``reference``: float32 (n, n) HU at dose 1; ``low[k]``: float32 (n, n) HU at ``doses[k]``.
    """

    reference: np.ndarray
    doses: tuple[float, ...]
    low: tuple[np.ndarray, ...]

    def at(self, dose: float) -> np.ndarray:
        """The low-dose image at ``dose`` (one of :attr:`doses`)."""
        for d, image in zip(self.doses, self.low, strict=True):
            if d == dose:
                return image
        raise KeyError(f"ct dose: no image at dose {dose}; doses are {self.doses}")


def line_integrals(hu: np.ndarray, pixel_mm: float, *, views: int = DEFAULT_VIEWS) -> np.ndarray:
    """Noiseless line integrals of an HU image: float64 (n, views), dimensionless.

    ``hu``: (n, n) Hounsfield units, ``pixel_mm``: pixel size in mm; ``views`` angles evenly
    over [0°, 180°). Whatever lies outside the inscribed circle is not scanned.
    """
    image = _checked_image(hu)
    px = _checked_pixel(pixel_mm)
    theta = _angles(_checked_views(views))
    mu = np.clip(MU_WATER_PER_MM * (1.0 + image / 1000.0), 0.0, None)
    mu[_outside_circle(image.shape[0])] = 0.0
    return radon(mu, theta, circle=True, preserve_range=True) * px


def noisy_line_integrals(
    p: np.ndarray,
    *,
    dose: float,
    seed: int,
    i0: float = DEFAULT_I0,
    electronic_sd: float = DEFAULT_ELECTRONIC_SD,
) -> np.ndarray:
    """Measured line integrals ``p_hat`` of one scan at ``dose``: float64, the shape of ``p``.

    Counts ``Poisson(i0 * dose * exp(-p))`` plus Gaussian electronic noise of SD
    ``electronic_sd`` counts, floored at one count, back to ``-ln(N / (i0 * dose))``.
    """
    _checked_settings(dose=dose, seed=seed, i0=i0, electronic_sd=electronic_sd)
    sinogram = np.asarray(p, dtype=np.float64)
    rng = _noise_stream(seed, dose)
    blank = i0 * dose
    counts = rng.poisson(blank * np.exp(-sinogram)).astype(np.float64)
    if electronic_sd > 0:
        counts += rng.normal(0.0, electronic_sd, sinogram.shape)
    return -np.log(np.maximum(counts, 1.0) / blank)


def reconstruct_hu(p: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Filtered back-projection (ramp filter) of line integrals ``p`` (n, views) taken over
    [0°, 180°): float32 (n, n) HU, -1000 outside the scanned circle."""
    sinogram = np.asarray(p, dtype=np.float64)
    if sinogram.ndim != 2 or min(sinogram.shape) < 1:
        raise VolumeError(
            f"ct dose: a sinogram must be 2-D (bins, views), got {sinogram.shape}"
        )
    px = _checked_pixel(pixel_mm)
    n, views = sinogram.shape
    mu = iradon(
        sinogram / px,
        _angles(views),
        output_size=n,
        filter_name="ramp",
        interpolation="linear",
        circle=True,
        preserve_range=True,
    )
    return (1000.0 * (mu / MU_WATER_PER_MM - 1.0)).astype(np.float32)


def simulate_scan(
    hu: np.ndarray,
    pixel_mm: float,
    *,
    dose: float,
    seed: int,
    i0: float = DEFAULT_I0,
    views: int = DEFAULT_VIEWS,
    electronic_sd: float = DEFAULT_ELECTRONIC_SD,
) -> np.ndarray:
    """One simulated scan of ``hu`` (n, n) at ``dose`` in (0, 1]: float32 (n, n) HU.

    ``dose=1`` is the normal-dose reference. Raises :class:`VolumeError` for an image it
    cannot scan and :class:`~devices.errors.ConfigError` for a setting out of range.
    """
    _checked_settings(dose=dose, seed=seed, i0=i0, electronic_sd=electronic_sd)
    p = line_integrals(hu, pixel_mm, views=views)
    p_hat = noisy_line_integrals(p, dose=dose, seed=seed, i0=i0, electronic_sd=electronic_sd)
    return reconstruct_hu(p_hat, pixel_mm)


def low_and_reference(
    hu: np.ndarray,
    pixel_mm: float,
    doses: Iterable[float],
    seed: int,
    *,
    i0: float = DEFAULT_I0,
    views: int = DEFAULT_VIEWS,
    electronic_sd: float = DEFAULT_ELECTRONIC_SD,
) -> DosePair:
    """The normal-dose reference and one low-dose image per dose, from one projection.

    Each image equals ``simulate_scan(hu, pixel_mm, dose=d, seed=seed, ...)`` (``d = 1`` for
    the reference); the noiseless sinogram is computed once and shared.
    """
    wanted = tuple(float(d) for d in doses)
    for d in (1.0, *wanted):
        _checked_settings(dose=d, seed=seed, i0=i0, electronic_sd=electronic_sd)
    p = line_integrals(hu, pixel_mm, views=views)

    def scan(dose: float) -> np.ndarray:
        p_hat = noisy_line_integrals(p, dose=dose, seed=seed, i0=i0, electronic_sd=electronic_sd)
        return reconstruct_hu(p_hat, pixel_mm)

    return DosePair(reference=scan(1.0), doses=wanted, low=tuple(scan(d) for d in wanted))


def _noise_stream(seed: int, dose: float) -> np.random.Generator:
    # The dose's exact float bits join the seed: distinct doses, distinct independent streams.
    key = int(np.float64(dose).view(np.uint64))
    return np.random.default_rng(np.random.SeedSequence([int(seed), key]))


def _angles(views: int) -> np.ndarray:
    return np.linspace(0.0, 180.0, views, endpoint=False)


def _outside_circle(n: int) -> np.ndarray:
    """skimage's own test for what ``radon(..., circle=True)`` does not scan."""
    rows, cols = np.ogrid[:n, :n]
    return (rows - n // 2) ** 2 + (cols - n // 2) ** 2 > (n // 2) ** 2


def _checked_image(hu: np.ndarray) -> np.ndarray:
    image = np.asarray(hu)
    if image.dtype.kind not in "fiu":
        raise VolumeError(
            f"ct dose: an HU image must hold real numbers, got dtype {image.dtype}"
        )
    if image.ndim != 2:
        raise VolumeError(f"ct dose: an HU image must be 2-D, got shape {image.shape}")
    if image.shape[0] != image.shape[1] or image.shape[0] < _MIN_SIZE:
        raise VolumeError(
            f"ct dose: an HU image must be square, at least {_MIN_SIZE}², got shape {image.shape}"
        )
    image = image.astype(np.float64)
    if not np.isfinite(image).all():
        raise VolumeError(
            f"ct dose: an HU image must be finite, got {np.sum(~np.isfinite(image))} NaN/inf pixels"
        )
    return image


def _checked_pixel(pixel_mm: float) -> float:
    px = float(pixel_mm)
    if not math.isfinite(px) or px <= 0:
        raise ConfigError(f"ct dose: pixel_mm must be a finite number > 0, got {pixel_mm!r}")
    return px


def _checked_views(views: int) -> int:
    if isinstance(views, bool) or not isinstance(views, int | np.integer) or views < 1:
        raise ConfigError(f"ct dose: views must be an int >= 1, got {views!r}")
    return int(views)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _checked_settings(*, dose: float, seed: int, i0: float, electronic_sd: float) -> None:
    if not (_is_real(dose) and 0.0 < float(dose) <= 1.0):
        raise ConfigError(f"ct dose: dose must be in (0, 1], got {dose!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"ct dose: seed must be an int >= 0, got {seed!r}")
    if not (_is_real(i0) and math.isfinite(i0) and i0 > 0):
        raise ConfigError(f"ct dose: i0 must be a finite number > 0, got {i0!r}")
    if not (_is_real(electronic_sd) and math.isfinite(electronic_sd) and electronic_sd >= 0):
        raise ConfigError(
            f"ct dose: electronic_sd must be a finite number >= 0, got {electronic_sd!r}"
        )


def _calibration(
    size: int, views: int, seeds: Iterable[int], dose: float, i0: float
) -> dict[str, object]:
    """Figures of the chain on phantom slices (used by ``python -m devices.ct_dose``): per slice
    and their medians. Noise SD is that of scan minus noiseless chain in the uniform regions."""
    rows: list[dict[str, float]] = []
    meta: list[dict[str, object]] = []
    for seed in seeds:
        t0 = time.perf_counter()
        phantom = anatomical_slice(size, seed=seed)
        t1 = time.perf_counter()
        p = line_integrals(phantom.hu, phantom.pixel_mm, views=views)
        t2 = time.perf_counter()
        low = reconstruct_hu(noisy_line_integrals(p, dose=dose, seed=seed, i0=i0), phantom.pixel_mm)
        t3 = time.perf_counter()
        ref = reconstruct_hu(noisy_line_integrals(p, dose=1.0, seed=seed, i0=i0), phantom.pixel_mm)
        clean = reconstruct_hu(p, phantom.pixel_mm)
        uniform = np.logical_or.reduce(phantom.uniform_regions)
        sd_low = float(np.std((low - clean)[uniform]))
        sd_ref = float(np.std((ref - clean)[uniform]))
        meta.append({"seed": seed, "region": phantom.region})
        rows.append(
            {
                "body_width_mm": float(phantom.body.any(axis=0).sum() * phantom.pixel_mm),
                "phantom_s": t1 - t0,
                "radon_s": t2 - t1,
                "per_dose_s": t3 - t2,  # noise and filtered back-projection
                "rmse_low_vs_reference_body_hu": float(
                    np.sqrt(np.mean((low - ref)[phantom.body] ** 2))
                ),
                "rmse_low_vs_reference_image_hu": float(np.sqrt(np.mean((low - ref) ** 2))),
                "noise_sd_reference_hu": sd_ref,
                "noise_sd_low_hu": sd_low,
                "noise_ratio": sd_low / sd_ref,
                "reference_bias_hu": float(np.mean((ref - phantom.hu)[uniform])),
            }
        )
    return {
        "size": size,
        "views": views,
        "dose": dose,
        "i0": i0,
        "median": {k: float(np.median([r[k] for r in rows])) for k in rows[0]},
        "slices": [
            {**m, **{k: round(v, 4) for k, v in r.items()}} for m, r in zip(meta, rows, strict=True)
        ],
    }


def main(argv: list[str] | None = None) -> None:
    """Print the chain's calibration figures on phantom slices as JSON."""
    parser = argparse.ArgumentParser(prog="python -m devices.ct_dose", description=main.__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--views", type=int, default=None, help="default: 720 * size / 512")
    parser.add_argument("--seeds", type=int, default=4, help="phantom slices 0..seeds-1")
    parser.add_argument("--dose", type=float, default=0.25)
    parser.add_argument("--i0", type=float, default=DEFAULT_I0)
    args = parser.parse_args(argv)
    views = args.views if args.views is not None else round(DEFAULT_VIEWS * args.size / 512)
    report = _calibration(args.size, views, range(args.seeds), args.dose, args.i0)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
