"""The NEMA NU-2 image-quality analysis of a PET scan of the NEMA IEC body phantom: find the
phantom (sphere plane, lung insert, the six spheres) without being told where it is, then
measure what a PET physicist reports: recovery coefficients, contrast recovery, background
variability, the lung insert's residual, and the EARL check (:mod:`engines.pet.earl`).

Input: float activity ``(z, y, x)`` (Bq/ml) with its voxel spacing in mm (anisotropic is
fine), or one 2-D slice ``(y, x)`` (a one-slice volume). Every per-sphere sequence is ordered by
size, 10 -> 37 mm. Coordinates are voxel indices ``(z, y, x)`` (floats: sub-voxel) and mm from
the centre of voxel ``(0, 0, 0)`` (``index * spacing``). numpy/scipy only; no torch.

The phantom's geometry and how it is found
(:func:`~engines.pet.nema_locate.locate_phantom`) are described in
:mod:`engines.pet.nema_locate`.

Measurements (:func:`analyse_nema`), on the unsmoothed values:

- per sphere, the VOI is a ball of the sphere's radius + ``voi_margin_mm`` (spill-out):
  ``max`` its hottest voxel; ``A50`` the mean of the voxels connected to it (26-neighbours)
  at or above 50 % of it: EARL's A50, a 3-D isocontour at 50 % of the maximum with no
  background correction (in a 2-D input: the 2-D isocontour);
- NU-2 contrast recovery ``Q_H = (C_H / C_B - 1) / (a_H / a_B - 1) * 100 %`` with ``C_H`` the
  mean in a 2-D circular ROI of the sphere's diameter on the sphere plane and ``C_B`` the mean
  of that size's background ROIs; background variability ``N = SD_B / C_B * 100 %`` (SD over
  the ROI means, n - 1). Background ROIs: 12 centres on the sphere plane, the ROIs of the six
  sizes concentric on them, every 37 mm ROI's edge 15 mm from the body's edge, the spheres
  and the lung insert where twelve non-overlapping ROIs fit so, less where not (the clearance
  used is reported), picked by farthest-point sampling of the allowed centres so they spread
  round the phantom; repeated on the planes nearest +-10 and +-20 mm: 60 ROIs per size, as
  NU-2 says, fewer where the volume (or the phantom) is thinner (one slice: 12), counted in
  ``background_rois``. ROI means use partial-area pixel weights;
- lung residual: the mean in a 30 mm ROI on the axis over the mean of that plane's twelve
  37 mm background ROIs, in percent, averaged over the background planes.

What needs the true activities (:class:`NemaActivities`, Bq/ml at scan time):

- ``sphere_bqml`` given: mode ``"absolute"``: RC = measured / ``sphere_bqml``; with
  ``background_bqml`` (or ``ratio``) also contrast recovery (and the background's recovery);
- only ``ratio`` (sphere : background): mode ``"ratio"``: contrast recovery, and RC against
  ``ratio`` times the measured background (the 37 mm background ROIs: a large uniform region
  taken as fully recovered);
- neither: mode ``"relative"``: RCs relative to the 37 mm sphere (``rc_*_relative``, always
  reported) and background variability only; no EARL check.

Cost: about 0.7 s for the real 89 x 192 x 192 scan on one core (most of it the 360 weighted
background ROI means and the smoothing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from devices.pet_phantom import LUNG_DIAMETER_MM, SPHERE_DIAMETERS_MM
from engines.errors import ConfigError
from engines.pet.earl import earl_check
from engines.pet.nema_locate import (
    LUNG_ROI_DIAMETER_MM,
    NemaConfig,
    NemaError,
    PhantomLocation,
    SphereLocation,
    _locate,
    _smooth,
    _volume,
)

__all__ = ["NemaActivities", "NemaMode", "NemaReport", "analyse_nema"]

# Where the background level is read to draw the body: inside the body whatever the rotation
# (the axis is >= 112 mm from every edge) and clear of the spheres (<= 75.7 mm from it).
_BACKGROUND_ANNULUS_MM = (82.0, 105.0)

NemaMode = Literal["absolute", "ratio", "relative"]


@dataclass(frozen=True, kw_only=True)
class NemaActivities:
    """The true activity concentrations at scan time, Bq/ml, as far as they are known.

    ``sphere_bqml``: the spheres'; ``background_bqml``: the background's; ``ratio``: sphere to
    background (e.g. 4 or 10). Give ``background_bqml`` or ``ratio``, not both. See
    :attr:`mode` for what each combination allows.
    """

    sphere_bqml: float | None = None
    background_bqml: float | None = None
    ratio: float | None = None

    def __post_init__(self) -> None:
        for name in ("sphere_bqml", "background_bqml", "ratio"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.background_bqml is not None and self.ratio is not None:
            raise ConfigError("give the background activity or the ratio, not both")
        ratio = self.activity_ratio
        if ratio is not None and ratio <= 1.0:
            raise ConfigError(f"the sphere:background ratio must exceed 1 (hot spheres), "
                              f"got {ratio:.4g}")

    @property
    def activity_ratio(self) -> float | None:
        """``a_H / a_B``: ``ratio``, or sphere / background when both are given, else None."""
        if self.ratio is not None:
            return float(self.ratio)
        if self.sphere_bqml is not None and self.background_bqml is not None:
            return float(self.sphere_bqml) / float(self.background_bqml)
        return None

    @property
    def mode(self) -> NemaMode:
        """``"absolute"`` with ``sphere_bqml``; ``"ratio"`` with a ratio alone; else
        ``"relative"``."""
        if self.sphere_bqml is not None:
            return "absolute"
        return "ratio" if self.activity_ratio is not None else "relative"


@dataclass(frozen=True, kw_only=True)
class NemaReport:
    """The analysis of one scan; every per-sphere tuple is ordered 10 -> 37 mm.

    Measured (Bq/ml): ``max_bqml`` (VOI maximum), ``a50_mean_bqml`` (A50 mean) over
    ``a50_voxels`` voxels, ``sphere_roi_bqml`` (``C_H``: 2-D ROI on the sphere plane),
    ``background_bqml``/``background_sd_bqml`` (``C_B``/``SD_B`` per ROI size over
    ``background_rois`` ROIs on ``background_planes``, centred at ``background_centres_vox``
    ``(y, x)`` and keeping ``background_clearance_mm`` from the edge, spheres and lung).
    Derived: ``rc_max``/``rc_mean`` (None in ``"relative"`` mode; see ``rc_reference`` for
    what they divide by), ``rc_max_relative``/``rc_mean_relative`` (over the 37 mm sphere's),
    ``contrast_recovery_percent`` (``Q_H``; None without a ratio),
    ``background_variability_percent`` (``N``), ``lung_residual_percent``,
    ``background_recovery`` (measured / true background; absolute mode with a background
    only), ``earl`` (:func:`engines.pet.earl.earl_check` of the RCs, None in relative mode).
    ``notes``: what was adapted (fewer planes than NU-2 asks for, ...).
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    location: PhantomLocation
    mode: NemaMode
    activities: NemaActivities
    diameters_mm: tuple[float, ...]
    max_bqml: tuple[float, ...]
    a50_mean_bqml: tuple[float, ...]
    a50_voxels: tuple[int, ...]
    sphere_roi_bqml: tuple[float, ...]
    background_bqml: tuple[float, ...]
    background_sd_bqml: tuple[float, ...]
    background_variability_percent: tuple[float, ...]
    background_rois: int
    background_planes: tuple[int, ...]
    background_clearance_mm: float
    background_centres_vox: tuple[tuple[float, float], ...]
    lung_residual_percent: float
    rc_reference: str
    rc_max: tuple[float, ...] | None
    rc_mean: tuple[float, ...] | None
    rc_max_relative: tuple[float, ...]
    rc_mean_relative: tuple[float, ...]
    contrast_recovery_percent: tuple[float, ...] | None
    background_recovery: float | None
    earl: dict[str, Any] | None = field(default=None, compare=False)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (tuples as lists)."""
        loc = self.location
        return {
            "shape": list(self.shape), "spacing_mm": list(self.spacing_mm),
            "mode": self.mode,
            "activities": {"sphere_bqml": self.activities.sphere_bqml,
                           "background_bqml": self.activities.background_bqml,
                           "ratio": self.activities.activity_ratio},
            "location": {
                "plane_z": loc.plane_z, "axis_vox": list(loc.axis_vox),
                "axis_mm": list(loc.axis_mm), "ring_angle_deg": loc.ring_angle_deg,
                "handedness": loc.handedness, "ring_radius_mm": loc.ring_radius_mm,
                "spheres": [{"diameter_mm": s.diameter_mm, "centre_vox": list(s.centre_vox),
                             "centre_mm": list(s.centre_mm)} for s in loc.spheres]},
            "diameters_mm": list(self.diameters_mm),
            "max_bqml": list(self.max_bqml),
            "a50_mean_bqml": list(self.a50_mean_bqml),
            "a50_voxels": list(self.a50_voxels),
            "sphere_roi_bqml": list(self.sphere_roi_bqml),
            "background_bqml": list(self.background_bqml),
            "background_sd_bqml": list(self.background_sd_bqml),
            "background_variability_percent": list(self.background_variability_percent),
            "background_rois": self.background_rois,
            "background_planes": list(self.background_planes),
            "background_clearance_mm": self.background_clearance_mm,
            "background_centres_vox": [list(c) for c in self.background_centres_vox],
            "lung_residual_percent": self.lung_residual_percent,
            "rc_reference": self.rc_reference,
            "rc_max": _list_or_none(self.rc_max),
            "rc_mean": _list_or_none(self.rc_mean),
            "rc_max_relative": list(self.rc_max_relative),
            "rc_mean_relative": list(self.rc_mean_relative),
            "contrast_recovery_percent": _list_or_none(self.contrast_recovery_percent),
            "background_recovery": self.background_recovery,
            "earl": self.earl,
            "notes": list(self.notes),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def format_table(self) -> str:
        """A text table for a terminal: the location, one row per sphere, the background."""
        loc = self.location
        ay, ax = loc.axis_mm[1], loc.axis_mm[2]
        lines = [
            f"NEMA IQ  mode {self.mode}  (RC = {self.rc_reference})",
            f"sphere plane z={loc.plane_z} ({loc.axis_mm[0]:.1f} mm); axis y={ay:.1f} "
            f"x={ax:.1f} mm; 10 mm sphere at {loc.ring_angle_deg:.1f} deg, handedness "
            f"{loc.handedness:+d}; ring radius {loc.ring_radius_mm:.1f} mm",
        ]
        has_rc = self.rc_max is not None and self.rc_mean is not None
        header = (f"{'d mm':>5} {'z,y,x mm':>20} {'max':>9} {'A50':>9} {'C_H':>9}"
                  + (f" {'RCmax':>6} {'RCmean':>6}" if has_rc else "")
                  + f" {'rRCmax':>6} {'rRCmean':>7}"
                  + (f" {'Q_H %':>6}" if self.contrast_recovery_percent is not None else "")
                  + f" {'N %':>5}" + (" EARL1 EARL2" if self.earl is not None else ""))
        lines.append(header)
        for i, d in enumerate(self.diameters_mm):
            s = loc.spheres[i]
            pos = ",".join(f"{c:.1f}" for c in s.centre_mm)
            row = (f"{d:5.0f} {pos:>20} {self.max_bqml[i]:9.4g} {self.a50_mean_bqml[i]:9.4g} "
                   f"{self.sphere_roi_bqml[i]:9.4g}")
            if self.rc_max is not None and self.rc_mean is not None:
                row += f" {self.rc_max[i]:6.3f} {self.rc_mean[i]:6.3f}"
            row += f" {self.rc_max_relative[i]:6.3f} {self.rc_mean_relative[i]:7.3f}"
            if self.contrast_recovery_percent is not None:
                row += f" {self.contrast_recovery_percent[i]:6.1f}"
            row += f" {self.background_variability_percent[i]:5.2f}"
            if self.earl is not None:
                row += "".join(f" {_band_mark(self.earl[band], i):>5}"
                               for band in ("EARL1", "EARL2"))
            lines.append(row)
        lines.append(f"background {self.background_bqml[-1]:.5g} Bq/ml (37 mm ROIs), "
                     f"{self.background_rois} ROIs per size on planes "
                     f"{', '.join(str(z) for z in self.background_planes)}; lung residual "
                     f"{self.lung_residual_percent:.1f} %"
                     + (f"; background recovery {self.background_recovery:.3f}"
                        if self.background_recovery is not None else ""))
        if self.earl is not None:
            lines.append(f"EARL1 {'pass' if self.earl['in_earl1'] else 'FAIL'}, "
                         f"EARL2 {'pass' if self.earl['in_earl2'] else 'FAIL'} "
                         f"(max/mean per sphere: + inside, - outside)")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def _band_mark(band: dict[str, Any], i: int) -> str:
    return "".join("+" if band[kind][i]["inside"] else "-" for kind in ("rc_max", "rc_mean"))


def _list_or_none(values: tuple[float, ...] | None) -> list[float] | None:
    return None if values is None else list(values)


# -- measurement -----------------------------------------------------------------------------

def _disc_roi(image: np.ndarray, centre_yx: tuple[float, float], radius_mm: float,
              spacing_yx: tuple[float, float], supersample: int = 5) -> float:
    """Mean of a 2-D image in a disc, each pixel weighted by its area inside the disc."""
    dy, dx = spacing_yx
    cy, cx = centre_yx
    y0 = max(0, int(math.floor(cy - radius_mm / dy)) - 1)
    y1 = min(image.shape[0], int(math.ceil(cy + radius_mm / dy)) + 2)
    x0 = max(0, int(math.floor(cx - radius_mm / dx)) - 1)
    x1 = min(image.shape[1], int(math.ceil(cx + radius_mm / dx)) + 2)
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    ys = ((np.arange(y0, y1)[:, None] + sub[None]).ravel() - cy) * dy
    xs = ((np.arange(x0, x1)[:, None] + sub[None]).ravel() - cx) * dx
    inside = (ys[:, None] ** 2 + xs[None] ** 2 <= radius_mm ** 2).astype(float)
    weights = inside.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
    total = float(weights.sum())
    if total <= 0:
        raise NemaError(f"a {2 * radius_mm:.0f} mm ROI at pixel ({cy:.1f}, {cx:.1f}) lies "
                        f"outside the image")
    return float((image[y0:y1, x0:x1] * weights).sum() / total)


def _sphere_voi(volume: np.ndarray, spacing: tuple[float, float, float],
                centre: tuple[float, float, float], radius_mm: float,
                fraction: float) -> tuple[float, float, int]:
    """Max, A50 mean and A50 voxel count in a ball VOI of ``radius_mm`` round ``centre``."""
    flat = volume.shape[0] == 1
    half = [0 if flat else int(math.ceil(radius_mm / spacing[0])) + 1,
            int(math.ceil(radius_mm / spacing[1])) + 1,
            int(math.ceil(radius_mm / spacing[2])) + 1]
    lo = [max(0, int(round(c)) - h) for c, h in zip(centre, half, strict=True)]
    hi = [min(n, int(round(c)) + h + 1) for c, h, n in zip(centre, half, volume.shape,
                                                            strict=True)]
    box = volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    zz, yy, xx = np.meshgrid(*[(np.arange(lo[k], hi[k]) - centre[k]) * spacing[k]
                               for k in range(3)], indexing="ij")
    if flat:
        zz = np.zeros_like(zz)
    voi = zz ** 2 + yy ** 2 + xx ** 2 <= radius_mm ** 2
    if not voi.any():
        raise NemaError(f"the sphere VOI at {centre} holds no voxel")
    peak_index = np.unravel_index(int(np.argmax(np.where(voi, box, -np.inf))), box.shape)
    peak = float(box[peak_index])
    above = voi & (box >= fraction * peak)
    labels, _ = ndimage.label(above, structure=np.ones((3, 3, 3), dtype=bool))
    region = labels == labels[peak_index]
    return peak, float(box[region].mean()), int(region.sum())


def _body_mask(smoothed_plane: np.ndarray, axis_yx: tuple[float, float],
               spacing_yx: tuple[float, float]) -> tuple[np.ndarray, float]:
    """The phantom's cross-section on a plane (holes filled) and its background level."""
    dy, dx = spacing_yx
    yy, xx = np.indices(smoothed_plane.shape)
    dist = np.hypot((yy - axis_yx[0]) * dy, (xx - axis_yx[1]) * dx)
    ring = (dist >= _BACKGROUND_ANNULUS_MM[0]) & (dist <= _BACKGROUND_ANNULUS_MM[1])
    if not ring.any():
        raise NemaError("the image holds no background round the sphere ring")
    level = float(np.median(smoothed_plane[ring]))
    if not level > 0:
        raise NemaError("no warm background round the sphere ring")
    labels, _ = ndimage.label(smoothed_plane > 0.5 * level)
    counts = np.bincount(labels[ring], minlength=labels.max() + 1)
    counts[0] = 0
    body = np.asarray(ndimage.binary_fill_holes(labels == int(np.argmax(counts))))
    return body, level


def _background_centres(body: np.ndarray, spacing_yx: tuple[float, float],
                        axis_yx: tuple[float, float], spheres: Sequence[SphereLocation],
                        cfg: NemaConfig) -> tuple[list[tuple[float, float]], float]:
    """Centres ``(y, x)`` of the background ROIs on a plane and the clearance (mm) they keep
    from the body's edge, the spheres and the lung insert.

    Farthest-point sampling of the allowed centres (the first: the farthest from the axis).
    NU-2's 15 mm, measured from each 37 mm ROI's edge, leaves room for only about half of
    twelve non-overlapping ROIs in this phantom (two lobes beside the ring), so the clearance
    is lowered in 2.5 mm steps until twelve fit without overlapping (10 mm on the real scan).
    """
    dy, dx = spacing_yx
    roi_radius = SPHERE_DIAMETERS_MM[-1] / 2
    edge = ndimage.distance_transform_edt(np.pad(body, 1), sampling=(dy, dx))[1:-1, 1:-1]
    yy, xx = np.indices(body.shape)
    keep_out = [(axis_yx, LUNG_DIAMETER_MM / 2)] + [
        ((s.centre_vox[1], s.centre_vox[2]), s.diameter_mm / 2) for s in spheres]
    distances = [np.hypot((yy - cy) * dy, (xx - cx) * dx) - radius
                 for (cy, cx), radius in keep_out]
    axis_mm = np.array([axis_yx[0] * dy, axis_yx[1] * dx])
    clearance = cfg.edge_margin_mm
    chosen: list[np.ndarray] = []
    while True:
        allowed = edge >= clearance + roi_radius
        for distance in distances:
            allowed &= distance >= clearance + roi_radius
        points = np.argwhere(allowed).astype(float)
        if len(points) >= cfg.background_rois_per_plane:
            mm = points * [dy, dx]
            picks = [int(np.argmax(np.hypot(*(mm - axis_mm).T)))]
            nearest = np.hypot(*(mm - mm[picks[0]]).T)
            separation = math.inf
            while len(picks) < cfg.background_rois_per_plane:
                k = int(np.argmax(nearest))
                separation = min(separation, float(nearest[k]))
                picks.append(k)
                nearest = np.minimum(nearest, np.hypot(*(mm - mm[k]).T))
            chosen = [points[k] for k in picks]
            if separation >= 2 * roi_radius:
                break
        if clearance <= 0.0:
            break
        clearance = max(0.0, clearance - 2.5)
    if not chosen:
        raise NemaError("too little background round the spheres for the NU-2 ROIs "
                        "(is the whole phantom in the field of view?)")
    return [(float(p[0]), float(p[1])) for p in chosen], clearance


def analyse_nema(values: np.ndarray, spacing_mm: Sequence[float],
                 activities: NemaActivities | None = None,
                 config: NemaConfig | None = None) -> NemaReport:
    """The NU-2 / EARL analysis of one scan (module docstring).

    ``values``: float ``(z, y, x)`` or ``(y, x)`` activity, Bq/ml; ``spacing_mm``: ``(z, y,
    x)`` (or ``(y, x)``) mm; ``activities``: what is known of the truth (default: nothing).
    Raises :class:`NemaError` when the phantom is not found.
    """
    known = activities or NemaActivities()
    cfg = config or NemaConfig()
    volume, spacing = _volume(values, spacing_mm)
    loc = _locate(volume, spacing, cfg)
    spacing_yx = (spacing[1], spacing[2])
    axis_yx = (loc.axis_vox[1], loc.axis_vox[2])
    notes: list[str] = []

    maxima, a50, a50_n = [], [], []
    for sphere in loc.spheres:
        peak, mean, count = _sphere_voi(volume, spacing, sphere.centre_vox,
                                        sphere.diameter_mm / 2 + cfg.voi_margin_mm,
                                        cfg.a50_fraction)
        maxima.append(peak)
        a50.append(mean)
        a50_n.append(count)
    plane_image = volume[loc.plane_z]
    sphere_roi = [_disc_roi(plane_image, (s.centre_vox[1], s.centre_vox[2]),
                            s.diameter_mm / 2, spacing_yx) for s in loc.spheres]

    smoothed_plane = _smooth(plane_image[None], spacing, cfg.detect_sigma_mm)[0]
    body, level = _body_mask(smoothed_plane, axis_yx, spacing_yx)
    centres, clearance = _background_centres(body, spacing_yx, axis_yx, loc.spheres, cfg)
    if clearance < cfg.edge_margin_mm:
        notes.append(f"background ROIs keep {clearance:.1f} mm (not {cfg.edge_margin_mm:.0f}) "
                     f"from the body's edge, spheres and lung insert: twelve non-overlapping "
                     f"37 mm ROIs fit no other way")
    planes: list[int] = []
    for offset in cfg.plane_offsets_mm:
        z = loc.plane_z + int(round(offset / spacing[0])) if volume.shape[0] > 1 else 0
        if not 0 <= z < volume.shape[0] or z in planes:
            continue
        inside = float(np.median(_smooth(volume[z][None], spacing,
                                         cfg.detect_sigma_mm)[0][body]))
        if inside < 0.5 * level:
            continue  # beyond the phantom's end
        planes.append(z)
    wanted = len(cfg.plane_offsets_mm)
    if len(planes) < wanted:
        notes.append(f"background ROIs on {len(planes)} plane(s), not {wanted}: the volume "
                     f"(or the phantom) is thinner than +-20 mm round the sphere plane")
    roi_means = np.array([[[_disc_roi(volume[z], c, d / 2, spacing_yx) for c in centres]
                           for z in planes] for d in SPHERE_DIAMETERS_MM])  # (size, plane, roi)
    per_size = roi_means.reshape(len(SPHERE_DIAMETERS_MM), -1)
    c_b = per_size.mean(axis=1)
    sd_b = per_size.std(axis=1, ddof=1)
    lung = [_disc_roi(volume[z], axis_yx, LUNG_ROI_DIAMETER_MM / 2, spacing_yx)
            / roi_means[-1, p].mean() * 100.0 for p, z in enumerate(planes)]

    ratio = known.activity_ratio
    contrast = None if ratio is None else tuple(
        float((h / b - 1.0) / (ratio - 1.0) * 100.0) for h, b in zip(sphere_roi, c_b,
                                                                      strict=True))
    mode = known.mode
    rc_max: tuple[float, ...] | None = None
    rc_mean: tuple[float, ...] | None = None
    if mode == "absolute":
        truth = float(known.sphere_bqml or 0.0)
        reference = f"measured / {truth:.6g} Bq/ml (the given sphere activity)"
    elif mode == "ratio":
        truth = float(ratio or 0.0) * float(c_b[-1])
        reference = (f"measured / ({ratio:.4g} x measured background {c_b[-1]:.6g} Bq/ml): "
                     f"the background taken as fully recovered")
    else:
        truth = 0.0
        reference = "relative only: measured / the 37 mm sphere's (no activities given)"
    if truth > 0:
        rc_max = tuple(float(m / truth) for m in maxima)
        rc_mean = tuple(float(m / truth) for m in a50)
    background_recovery = (None if known.background_bqml is None
                           else float(c_b[-1] / known.background_bqml))
    return NemaReport(
        shape=(volume.shape[0], volume.shape[1], volume.shape[2]), spacing_mm=spacing,
        location=loc, mode=mode, activities=known, diameters_mm=SPHERE_DIAMETERS_MM,
        max_bqml=tuple(maxima), a50_mean_bqml=tuple(a50), a50_voxels=tuple(a50_n),
        sphere_roi_bqml=tuple(sphere_roi), background_bqml=tuple(float(v) for v in c_b),
        background_sd_bqml=tuple(float(v) for v in sd_b),
        background_variability_percent=tuple(float(s / b * 100.0) for s, b in zip(
            sd_b, c_b, strict=True)),
        background_rois=int(per_size.shape[1]), background_planes=tuple(planes),
        background_clearance_mm=clearance, background_centres_vox=tuple(centres),
        lung_residual_percent=float(np.mean(lung)), rc_reference=reference,
        rc_max=rc_max, rc_mean=rc_mean,
        rc_max_relative=tuple(float(m / maxima[-1]) for m in maxima),
        rc_mean_relative=tuple(float(m / a50[-1]) for m in a50),
        contrast_recovery_percent=contrast, background_recovery=background_recovery,
        earl=None if rc_max is None or rc_mean is None else earl_check(rc_max, rc_mean),
        notes=tuple(notes))
