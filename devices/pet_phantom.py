"""The NEMA IEC body phantom (NEMA NU 2 image-quality phantom) as a 2-D transaxial slice.

Geometry of the fillable interior, in mm, in the phantom's frame: ``x`` to the right, ``y`` up
towards the curved (anterior) side, origin on the axis of the lung insert, which is also the
centre of the body's 294 x 224 mm bounding box:

- body: the upper half-disc of radius 147 mm centred at ``(0, -35)`` (the curved side), and
  below ``y = -35`` the flat-bottomed part: a 140 mm wide rectangle down to ``y = -112`` with
  two quarter-disc corners of radius 77 mm centred at ``(+-70, -35)``. That is the IEC 61675-1
  drawing (and the OpenGATE model of it) less the 3 mm PMMA wall: 294 mm wide, 147 + 77 =
  224 mm high, area ``pi 147^2 / 2 + 140 * 77 + pi 77^2 / 2`` = 54 036 mm^2 (:data:`BODY_AREA_MM2`);
- six spheres of inner diameter 10, 13, 17, 22, 28, 37 mm, centres in the slice plane
  ``z = 0`` on a ring of radius 57.2 mm around the origin at 60 deg steps, as they appear in a
  reconstructed image displayed anterior-up (checked against the real scan in
  ``shared/data/pet-nema-iq``): 37 mm on the right (0 deg), then counter-clockwise 10 (60),
  13 (120), 17 (180, left), 22 (240), 28 (300). A slice at height ``z`` cuts a sphere of radius
  ``r`` in a disc of radius ``sqrt(r^2 - z^2)``, nothing where ``|z| >= r``;
- the lung insert: a cold cylinder of 51 mm diameter on the axis, lung-equivalent attenuation
  (:data:`MU_LUNG_PER_MM`, about 0.3 g/ml), no activity;
- water everywhere else inside the body (:data:`MU_WATER_PER_MM` at 511 keV), at the
  background activity; the spheres at ``sphere_ratio`` times the background (10:1 in PAPERS.md
  §2: 2 kBq/ml and 20 kBq/ml).

Axial resolution. ``axial_fwhm_mm > 0`` gives the slice as a scanner with that axial
resolution sees it: the 3-D activity averaged along the axis with Gaussian weights around
``z``. Only the spheres change (body and lung are cylinders); each sample's sphere fraction is
exact, ``(erf((h - z) / (s sqrt 2)) + erf((h + z) / (s sqrt 2))) / 2`` with ``h`` the sphere's
half-chord along the axis at that point and ``s`` the Gaussian's SD. ``0`` (the default) is
the ideal slice, the truth against which recovery is measured.

Left out: the plastic walls of the spheres (1 mm), of the lung insert and of the body shell, and
the filling capillaries. They would add thin cold rims that a 6.5 mm PET resolution blurs away.

Image grid: ``size_px`` square pixels of ``pixel_mm``; the array's row index grows downwards
(anterior at the top), its column index to the right; the phantom's origin sits on the image
centre ``((size - 1) / 2, (size - 1) / 2)`` unless shifted. The defaults (200 px of 2.0 mm, a
400 mm field of view, close to the clinical 192 x 2.08 mm) leave 53 mm of air beside the body
and 88 mm above and below it. Every pixel is the area average of ``supersample^2`` point
samples, so partial volume at the edges is right (a 10 mm sphere's area is within 1 % at 2 mm
pixels with the default 4 x 4).

numpy and scipy only; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from devices.errors import ConfigError

__all__ = [
    "BODY_AREA_MM2",
    "BODY_CORNER_RADIUS_MM",
    "BODY_HEIGHT_MM",
    "BODY_RADIUS_MM",
    "BODY_WIDTH_MM",
    "LUNG_DIAMETER_MM",
    "MU_LUNG_PER_MM",
    "MU_WATER_PER_MM",
    "SPHERE_ANGLES_DEG",
    "SPHERE_DIAMETERS_MM",
    "SPHERE_RING_RADIUS_MM",
    "NemaSlice",
    "nema_slice",
]

SPHERE_DIAMETERS_MM: tuple[float, ...] = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
"""Inner diameters of the six fillable spheres, smallest first (the order of every per-sphere
tuple in this module)."""
SPHERE_ANGLES_DEG: tuple[float, ...] = (60.0, 120.0, 180.0, 240.0, 300.0, 0.0)
"""Angle of each sphere's centre on the ring, counter-clockwise from the right, anterior up."""
SPHERE_RING_RADIUS_MM = 57.2
LUNG_DIAMETER_MM = 51.0
BODY_WIDTH_MM = 294.0
BODY_HEIGHT_MM = 224.0
BODY_RADIUS_MM = 147.0
"""Radius of the curved (anterior) half of the body."""
BODY_CORNER_RADIUS_MM = 77.0
"""Radius of the two rounded corners of the flat (posterior) side."""
_ARC_CENTRE_Y_MM = BODY_HEIGHT_MM / 2 - BODY_RADIUS_MM  # -35: the half-disc's centre
_FLAT_HALF_WIDTH_MM = BODY_WIDTH_MM / 2 - BODY_CORNER_RADIUS_MM  # 70
BODY_AREA_MM2 = (
    math.pi * BODY_RADIUS_MM**2 / 2
    + 2 * _FLAT_HALF_WIDTH_MM * BODY_CORNER_RADIUS_MM
    + math.pi * BODY_CORNER_RADIUS_MM**2 / 2
)
MU_WATER_PER_MM = 0.0096
"""Linear attenuation of water at 511 keV, per mm."""
MU_LUNG_PER_MM = 0.003
"""Lung-equivalent insert (about 0.3 g/ml, 0.03 /cm) at 511 keV, per mm."""

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True, kw_only=True, eq=False)
class NemaSlice:
    """One transaxial slice of the phantom on a square grid.

    ``activity_bq_ml``: float32 (H, W), activity concentration in Bq/ml (area averages);
    ``mu_per_mm``: float32 (H, W), linear attenuation at 511 keV per mm; ``body``: bool (H, W),
    pixels at least half inside the body. Positions are in pixels as (row, column), floats,
    after rotation and shift; radii in pixels. Per-sphere tuples follow
    :data:`SPHERE_DIAMETERS_MM` (smallest first); ``section_diameters_mm`` is 0 for a sphere
    the slice misses. ``supersample`` and ``axial_fwhm_mm`` record how it was rendered
    (:func:`nema_slice`), so the same slice can be drawn again through another resolution.
    """

    activity_bq_ml: np.ndarray
    mu_per_mm: np.ndarray
    body: np.ndarray
    pixel_mm: float
    z_mm: float
    background_bq_ml: float
    sphere_ratio: float
    rotation_deg: float
    shift_mm: tuple[float, float]
    supersample: int
    axial_fwhm_mm: float
    sphere_centers_px: tuple[tuple[float, float], ...]
    sphere_diameters_mm: tuple[float, ...]
    section_diameters_mm: tuple[float, ...]
    lung_center_px: tuple[float, float]
    lung_radius_px: float

    @property
    def sphere_bq_ml(self) -> float:
        """Activity concentration of the spheres, Bq/ml."""
        return self.background_bq_ml * self.sphere_ratio

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.activity_bq_ml.shape[0]), int(self.activity_bq_ml.shape[1]))


def nema_slice(
    *,
    size_px: int = 200,
    pixel_mm: float = 2.0,
    z_mm: float = 0.0,
    background_bq_ml: float = 2000.0,
    sphere_ratio: float = 10.0,
    rotation_deg: float = 0.0,
    shift_mm: tuple[float, float] = (0.0, 0.0),
    supersample: int = 4,
    axial_fwhm_mm: float = 0.0,
) -> NemaSlice:
    """The phantom's slice at height ``z_mm`` above the sphere plane.

    ``rotation_deg`` turns the phantom counter-clockwise (as displayed) about its axis;
    ``shift_mm`` then moves it along the array's (row, column) axes, in mm; ``supersample``
    point samples per pixel side; ``axial_fwhm_mm`` the axial resolution through which the
    slice is seen (0: the ideal slice; module docstring). The body must stay
    inside the image: a setting that pushes it out, or any value out of range, raises
    :class:`~devices.errors.ConfigError`.
    """
    _check(
        size_px=size_px,
        pixel_mm=pixel_mm,
        z_mm=z_mm,
        background_bq_ml=background_bq_ml,
        sphere_ratio=sphere_ratio,
        rotation_deg=rotation_deg,
        shift_mm=shift_mm,
        supersample=supersample,
        axial_fwhm_mm=axial_fwhm_mm,
    )
    shift = (float(shift_mm[0]), float(shift_mm[1]))
    theta = math.radians(rotation_deg)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    centre = (size_px - 1) / 2.0

    # Sample points in array-axis mm relative to the image centre, then into the phantom frame
    # (undo the shift, rotate by -theta, flip rows so y points up).
    fine = (np.arange(size_px * supersample) + 0.5) / supersample - 0.5  # pixel units
    axis_mm = (fine - centre) * pixel_mm
    row_mm = axis_mm[:, None] - shift[0]
    col_mm = axis_mm[None, :] - shift[1]
    up = -row_mm
    x = cos_t * col_mm + sin_t * up
    y = -sin_t * col_mm + cos_t * up

    inside = _inside_body(x, y)
    lung_r = LUNG_DIAMETER_MM / 2
    lung = x * x + y * y <= lung_r * lung_r
    # Fraction of each sample's axial line of sight (the slice, or the slice seen through a
    # Gaussian axial resolution) that lies inside a sphere: exact, as the sphere's chord at
    # in-plane distance rho is |z'| < h = sqrt(r^2 - rho^2).
    sigma_z = axial_fwhm_mm / _FWHM_PER_SIGMA
    filled = np.zeros(x.shape, dtype=np.float64)
    sections: list[float] = []
    sphere_xy: list[tuple[float, float]] = []
    for diameter, angle in zip(SPHERE_DIAMETERS_MM, SPHERE_ANGLES_DEG, strict=True):
        sx = SPHERE_RING_RADIUS_MM * math.cos(math.radians(angle))
        sy = SPHERE_RING_RADIUS_MM * math.sin(math.radians(angle))
        sphere_xy.append((sx, sy))
        r2 = (diameter / 2) ** 2
        section2 = r2 - z_mm * z_mm
        sections.append(2.0 * math.sqrt(section2) if section2 > 0 else 0.0)
        rho2 = (x - sx) ** 2 + (y - sy) ** 2
        if sigma_z == 0.0:
            filled[rho2 < section2] = 1.0
            continue
        near = rho2 < r2
        h = np.sqrt(r2 - rho2[near])
        scale = sigma_z * math.sqrt(2.0)
        filled[near] = 0.5 * (erf((h - z_mm) / scale) + erf((h + z_mm) / scale))

    water = inside & ~lung
    activity = background_bq_ml * (water + (sphere_ratio - 1.0) * filled)
    mu = np.where(water, MU_WATER_PER_MM, np.where(inside, MU_LUNG_PER_MM, 0.0))

    def area_mean(values: np.ndarray) -> np.ndarray:
        blocks = values.reshape(size_px, supersample, size_px, supersample)
        return blocks.mean(axis=(1, 3))

    def to_px(px: float, py: float) -> tuple[float, float]:
        # phantom frame -> array axes: rotate by +theta, flip y to rows, shift, to pixels
        col = cos_t * px - sin_t * py
        up_ = sin_t * px + cos_t * py
        return (centre + (-up_ + shift[0]) / pixel_mm, centre + (col + shift[1]) / pixel_mm)

    return NemaSlice(
        activity_bq_ml=area_mean(activity).astype(np.float32),
        mu_per_mm=area_mean(mu).astype(np.float32),
        body=area_mean(inside.astype(np.float64)) >= 0.5,
        pixel_mm=float(pixel_mm),
        z_mm=float(z_mm),
        background_bq_ml=float(background_bq_ml),
        sphere_ratio=float(sphere_ratio),
        rotation_deg=float(rotation_deg),
        shift_mm=shift,
        supersample=supersample,
        axial_fwhm_mm=float(axial_fwhm_mm),
        sphere_centers_px=tuple(to_px(sx, sy) for sx, sy in sphere_xy),
        sphere_diameters_mm=SPHERE_DIAMETERS_MM,
        section_diameters_mm=tuple(sections),
        lung_center_px=to_px(0.0, 0.0),
        lung_radius_px=lung_r / pixel_mm,
    )


def _inside_body(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether phantom-frame points (mm) lie inside the body's interior (the D shape)."""
    dy = y - _ARC_CENTRE_Y_MM
    upper = (dy >= 0) & (x * x + dy * dy <= BODY_RADIUS_MM**2)
    ax = np.abs(x)
    lower_band = (dy < 0) & (dy >= -BODY_CORNER_RADIUS_MM)
    corner = (ax - _FLAT_HALF_WIDTH_MM) ** 2 + dy * dy <= BODY_CORNER_RADIUS_MM**2
    lower = lower_band & ((ax <= _FLAT_HALF_WIDTH_MM) | corner)
    return np.asarray(upper | lower)


def _check(
    *,
    size_px: int,
    pixel_mm: float,
    z_mm: float,
    background_bq_ml: float,
    sphere_ratio: float,
    rotation_deg: float,
    shift_mm: tuple[float, float],
    supersample: int,
    axial_fwhm_mm: float,
) -> None:
    where = "pet phantom"
    if not isinstance(size_px, int) or size_px < 16:
        raise ConfigError(f"{where}: size_px must be an integer >= 16, got {size_px!r}")
    if not isinstance(supersample, int) or not 1 <= supersample <= 16:
        raise ConfigError(
            f"{where}: supersample must be an integer in [1, 16], got {supersample!r}"
        )
    finite = {
        "pixel_mm": pixel_mm,
        "z_mm": z_mm,
        "background_bq_ml": background_bq_ml,
        "sphere_ratio": sphere_ratio,
        "rotation_deg": rotation_deg,
        "axial_fwhm_mm": axial_fwhm_mm,
    }
    for name, value in finite.items():
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be finite, got {value!r}")
    if len(shift_mm) != 2 or not all(math.isfinite(s) for s in shift_mm):
        raise ConfigError(f"{where}: shift_mm must be two finite mm (row, column), got {shift_mm}")
    if pixel_mm <= 0:
        raise ConfigError(f"{where}: pixel_mm must be > 0, got {pixel_mm}")
    if background_bq_ml < 0:
        raise ConfigError(f"{where}: background_bq_ml must be >= 0, got {background_bq_ml}")
    if axial_fwhm_mm < 0:
        raise ConfigError(f"{where}: axial_fwhm_mm must be >= 0, got {axial_fwhm_mm}")
    if sphere_ratio < 0:
        raise ConfigError(f"{where}: sphere_ratio must be >= 0, got {sphere_ratio}")
    # The body's farthest point from the phantom's axis is the top of its curved side; keep
    # that circle, moved by the shift, inside the image's inscribed circle (the scanned field).
    reach_mm = BODY_RADIUS_MM - _ARC_CENTRE_Y_MM + math.hypot(*shift_mm)
    half_fov_mm = size_px * pixel_mm / 2
    if reach_mm > half_fov_mm:
        raise ConfigError(
            f"{where}: the body reaches {reach_mm:.0f} mm from the image centre but the "
            f"{size_px} x {pixel_mm} mm grid covers only {half_fov_mm:.0f} mm; use a larger "
            "grid or a smaller shift"
        )
