"""Finding the NEMA IEC body phantom in a PET scan for the NU-2 image-quality analysis
(:mod:`engines.pet.nema`): the phantom's geometry, the analysis' configuration, the
located phantom and :func:`locate_phantom`. Input and coordinates as in
:mod:`engines.pet.nema`. numpy/scipy only; no torch.

Geometry (NEMA NU-2 / IEC 61675-1, inner dimensions): spheres of 10, 13, 17, 22, 28 and 37 mm
with their centres in one transverse plane on a circle of radius 57.2 mm round the phantom's
axis, 60 degrees apart in order of size; the cold lung insert (51 mm) on that axis; the
D-shaped body 294 x 224 mm (a half-disc of radius 147 mm whose centre lies 35 mm from the axis
toward the flat side, and a flat side with 77 mm corners, 112 mm from the axis). The
analysis draws the body from the image itself (any rotation, any simulator); the sizes come
from :mod:`devices.pet_phantom`, the phantom's one description.

Localisation (:func:`locate_phantom`), on a Gaussian-smoothed copy (``detect_sigma_mm``):

1. the phantom's axis: the cold disc (lung insert) found by a matched filter on the mean of
   the slices inside the phantom: the coldest of four quarter-annuli (28-36 mm) minus the
   central disc (18 mm), over the hottest quarter (so neither an edge of the body nor a
   warm spot ringed by hot spheres can score);
2. the sphere plane: the slice whose profile along the 57.2 mm circle has the largest
   mean minus median (a hot sphere raises the mean, not the median);
3. the ring's rotation and handedness: the circular cross-correlation of that profile with
   the template of the six spheres' arcs, both handednesses (a scan may be mirrored);
4. the whole ring template (axis y, x and rotation) refined by maximising the activity summed
   over sphere-sized discs (Nelder-Mead), so faint small spheres ride on the big ones;
5. each sphere on its own: the sub-voxel position (within ``sphere_search_mm``) that maximises
   the mean in a ball of the sphere's size (partial-volume weights), a parabola through the
   best voxel's neighbours. Hot spheres are assumed (any ratio > 1; the lower, the noisier).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize, signal

from devices.pet_phantom import SPHERE_DIAMETERS_MM, SPHERE_RING_RADIUS_MM
from engines.errors import ConfigError, EngineError

__all__ = [
    "LUNG_ROI_DIAMETER_MM",
    "NemaConfig",
    "NemaError",
    "PhantomLocation",
    "SphereLocation",
    "locate_phantom",
]

#: The NU-2 lung-residual ROI, mm.
LUNG_ROI_DIAMETER_MM = 30.0

_RING_STEP_RAD = math.pi / 3
_PROFILE_SAMPLES = 720
# The lung finder: a central disc and a surrounding annulus, both clear of the insert's wall
# (25.5 mm) and of the spheres (nearest surface 57.2 - 18.5 = 38.7 mm).
_LUNG_CORE_MM = 18.0
_LUNG_ANNULUS_MM = (28.0, 36.0)


class NemaError(EngineError, ValueError):
    """A volume the NEMA analysis cannot use: no phantom (cold insert, hot spheres) found, a
    field of view too small for it, or values that are not finite."""


@dataclass(frozen=True, kw_only=True)
class NemaConfig:
    """How the analysis runs (defaults: NU-2 and EARL as described in this module's and
    :mod:`engines.pet.nema`'s docstrings).

    ``detect_sigma_mm``: Gaussian SD of the copy the phantom is found on. ``sphere_search_mm``:
    how far (each axis) a sphere may sit from the fitted ring. ``voi_margin_mm``: the sphere
    VOI's radius beyond the sphere's (spill-out of a ~6 mm FWHM scanner). ``a50_fraction``:
    the isocontour, of the VOI's maximum. ``edge_margin_mm``: background ROIs' clearance from
    the body's edge, the spheres and the lung insert. ``background_rois_per_plane``: 12.
    ``plane_offsets_mm``: the background planes round the sphere plane.
    """

    detect_sigma_mm: float = 3.0
    sphere_search_mm: float = 5.0
    voi_margin_mm: float = 6.0
    a50_fraction: float = 0.5
    edge_margin_mm: float = 15.0
    background_rois_per_plane: int = 12
    plane_offsets_mm: tuple[float, ...] = (0.0, -10.0, 10.0, -20.0, 20.0)

    def __post_init__(self) -> None:
        for name in ("detect_sigma_mm", "sphere_search_mm", "voi_margin_mm", "edge_margin_mm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be >= 0 mm, got {value!r}")
        if not 0.0 < self.a50_fraction < 1.0:
            raise ConfigError(f"a50_fraction must lie in (0, 1), got {self.a50_fraction!r}")
        if self.background_rois_per_plane < 2:
            raise ConfigError("background_rois_per_plane must be at least 2")
        if not self.plane_offsets_mm or self.plane_offsets_mm[0] != 0.0:
            raise ConfigError("plane_offsets_mm must start with 0 (the sphere plane)")


@dataclass(frozen=True, kw_only=True)
class SphereLocation:
    """One sphere: its inner ``diameter_mm`` and centre as voxel indices ``(z, y, x)``
    (sub-voxel) and in mm (``index * spacing``)."""

    diameter_mm: float
    centre_vox: tuple[float, float, float]
    centre_mm: tuple[float, float, float]


@dataclass(frozen=True, kw_only=True)
class PhantomLocation:
    """Where the phantom is.

    ``plane_z``: the slice the 2-D NU-2 ROIs are drawn on (nearest the big spheres' centres).
    ``axis_vox``/``axis_mm``: the phantom's axis (lung insert, ring centre) on that slice,
    ``(z, y, x)``. ``ring_angle_deg``: the direction of the 10 mm sphere from the axis, from +x
    toward +y (image columns, rows). ``handedness``: +1 when the spheres grow in size toward
    increasing angle, -1 when they grow the other way (a mirrored image). ``spheres``: 10 ->
    37 mm. ``ring_radius_mm``: the spheres' mean distance from the axis (57.2 by design).
    """

    plane_z: int
    axis_vox: tuple[float, float, float]
    axis_mm: tuple[float, float, float]
    ring_angle_deg: float
    handedness: int
    spheres: tuple[SphereLocation, ...]
    ring_radius_mm: float


# -- input -----------------------------------------------------------------------------------

def _volume(values: np.ndarray, spacing_mm: Sequence[float]
            ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``values`` as float64 ``(z, y, x)`` and the spacing as ``(z, y, x)`` mm; a 2-D slice
    may give ``(y, x)`` spacing (its z spacing is then its y spacing, never used)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"values must be (z, y, x) or (y, x), got shape {np.shape(values)}")
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) == 2:
        spacing = (spacing[0], *spacing)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be 3 (or 2) positive mm, got {spacing_mm!r}")
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise NemaError(f"{bad} NaN or Inf voxels of {array.size}")
    fov = min(array.shape[1] * spacing[1], array.shape[2] * spacing[2])
    need = 2 * (SPHERE_RING_RADIUS_MM + SPHERE_DIAMETERS_MM[-1] / 2 + 10.0)
    if fov < need:
        raise NemaError(f"a field of view of {fov:.0f} mm cannot hold the sphere ring "
                        f"({need:.0f} mm across)")
    return array, (spacing[0], spacing[1], spacing[2])


def _smooth(volume: np.ndarray, spacing: tuple[float, float, float],
            sigma_mm: float) -> np.ndarray:
    if sigma_mm <= 0:
        return volume.copy()
    sigma = [0.0 if volume.shape[0] == 1 else sigma_mm / spacing[0],
             sigma_mm / spacing[1], sigma_mm / spacing[2]]
    return np.asarray(ndimage.gaussian_filter(volume, sigma, mode="nearest"))


# -- localisation ----------------------------------------------------------------------------

def _disc_kernel(spacing_yx: tuple[float, float], outer_mm: float, inner_mm: float = 0.0,
                 quadrant: int | None = None) -> np.ndarray:
    """A normalised flat kernel over a disc (or annulus, or one quarter of it)."""
    dy, dx = spacing_yx
    ny, nx = int(math.ceil(outer_mm / dy)) + 1, int(math.ceil(outer_mm / dx)) + 1
    yy, xx = np.mgrid[-ny:ny + 1, -nx:nx + 1]
    dist = np.hypot(yy * dy, xx * dx)
    mask = (dist < outer_mm) & (dist >= inner_mm)
    if quadrant is not None:
        mask &= (np.floor(np.arctan2(yy, xx) / (math.pi / 2)).astype(int) % 4) == quadrant
    return np.asarray(mask / mask.sum(), dtype=np.float64)


def _find_axis(image: np.ndarray, spacing_yx: tuple[float, float]) -> tuple[float, float]:
    """The lung insert's centre ``(y, x)`` (sub-pixel) on a 2-D mean image.

    Score: (coldest quarter-annulus - core) / (hottest quarter-annulus), where the annulus is
    warm (at least half the body's level): a cold core in a uniform warm ring scores near 1;
    a warm spot ringed by hot spheres, or a body edge, scores low.
    """
    core = signal.fftconvolve(image, _disc_kernel(spacing_yx, _LUNG_CORE_MM), mode="same")
    quarters = np.array([signal.fftconvolve(image, _disc_kernel(
        spacing_yx, _LUNG_ANNULUS_MM[1], _LUNG_ANNULUS_MM[0], q), mode="same")
        for q in range(4)])
    warm = image[image > 0.05 * float(np.percentile(image, 99.9))]
    level = float(np.median(warm)) if warm.size else 0.0
    if not level > 0:
        raise NemaError("the image holds no activity")
    low, high = quarters.min(axis=0), quarters.max(axis=0)
    score = np.where(low >= 0.5 * level, (low - core) / (high + 0.1 * level), -np.inf)
    # The ring must fit inside the image round the axis.
    reach = SPHERE_RING_RADIUS_MM + SPHERE_DIAMETERS_MM[-1] / 2
    my = min(int(math.ceil(reach / spacing_yx[0])), image.shape[0] // 2 - 1)
    mx = min(int(math.ceil(reach / spacing_yx[1])), image.shape[1] // 2 - 1)
    inner = np.full_like(score, -np.inf)
    inner[my:image.shape[0] - my, mx:image.shape[1] - mx] = \
        score[my:image.shape[0] - my, mx:image.shape[1] - mx]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    if not inner[y, x] > 0.4:
        raise NemaError("no cold lung insert found (a cold disc of 51 mm inside warm "
                        "background): is this a NEMA IEC body phantom?")
    return (float(y) + _parabola_offset(inner[y - 1:y + 2, x]),
            float(x) + _parabola_offset(inner[y, x - 1:x + 2]))


def _parabola_offset(three: np.ndarray) -> float:
    """Sub-sample offset of a peak from three samples round it (0 when flat or not a peak)."""
    if three.shape != (3,) or not np.all(np.isfinite(three)):
        return 0.0
    a, b, c = (float(v) for v in three)
    denom = a - 2 * b + c
    if denom >= 0:
        return 0.0
    return float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))


def _ring_points(axis_yx: tuple[float, float], spacing_yx: tuple[float, float],
                 radius_mm: float, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (axis_yx[0] + radius_mm * np.sin(angles) / spacing_yx[0],
            axis_yx[1] + radius_mm * np.cos(angles) / spacing_yx[1])


def _find_plane(smoothed: np.ndarray, axis_yx: tuple[float, float],
                spacing_yx: tuple[float, float]) -> int:
    """The slice whose profile along the ring has the largest mean minus median."""
    if smoothed.shape[0] == 1:
        return 0
    angles = np.linspace(0, 2 * math.pi, _PROFILE_SAMPLES, endpoint=False)
    ys, xs = _ring_points(axis_yx, spacing_yx, SPHERE_RING_RADIUS_MM, angles)
    nz = smoothed.shape[0]
    coords = [np.repeat(np.arange(nz, dtype=float), ys.size), np.tile(ys, nz), np.tile(xs, nz)]
    profiles = ndimage.map_coordinates(smoothed, coords, order=1,
                                       mode="nearest").reshape(nz, -1)
    score = profiles.mean(axis=1) - np.median(profiles, axis=1)
    return int(np.argmax(score))


def _sphere_angles(theta0: float, handedness: int) -> np.ndarray:
    return theta0 + handedness * _RING_STEP_RAD * np.arange(len(SPHERE_DIAMETERS_MM))


def _fit_rotation(profile: np.ndarray) -> tuple[float, int]:
    """The 10 mm sphere's angle (rad) and the handedness that best match the six spheres'
    arcs to a ring profile sampled at ``_PROFILE_SAMPLES`` angles from 0."""
    n = profile.size
    phi = np.arange(n) * (2 * math.pi / n)
    spectrum = np.fft.rfft(profile - profile.mean())
    best: tuple[float, float, int] = (-math.inf, 0.0, 1)
    for handedness in (1, -1):
        template = np.zeros(n)
        for i, centre in enumerate(_sphere_angles(0.0, handedness)):
            half = 2 * math.asin(SPHERE_DIAMETERS_MM[i] / 2 / (2 * SPHERE_RING_RADIUS_MM))
            offset = np.angle(np.exp(1j * (phi - centre)))
            template[np.abs(offset) < half] = 1.0
        corr = np.fft.irfft(spectrum * np.conj(np.fft.rfft(template - template.mean())), n)
        k = int(np.argmax(corr))
        if corr[k] > best[0]:
            frac = _parabola_offset(corr[[(k - 1) % n, k, (k + 1) % n]])
            best = (float(corr[k]), (k + frac) * 2 * math.pi / n, handedness)
    return best[1], best[2]


def _disc_points(radius_mm: float, step_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (mm) of a square grid of points filling a disc, for sampled disc sums."""
    n = int(math.ceil(radius_mm / step_mm))
    grid = (np.arange(-n, n + 1) + 0.0) * step_mm
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    inside = np.hypot(yy, xx) <= radius_mm
    return yy[inside], xx[inside]


def _refine_ring(plane: np.ndarray, spacing_yx: tuple[float, float],
                 axis_yx: tuple[float, float], theta0: float,
                 handedness: int) -> tuple[tuple[float, float], float]:
    """Axis and rotation maximising the activity summed over the six spheres' discs."""
    discs = [_disc_points(d / 2) for d in SPHERE_DIAMETERS_MM]
    dy, dx = spacing_yx

    def cost(p: np.ndarray) -> float:
        ay, ax, theta = float(p[0]), float(p[1]), float(p[2])
        total = 0.0
        for (oy, ox), angle in zip(discs, _sphere_angles(theta, handedness), strict=True):
            cy = ay + SPHERE_RING_RADIUS_MM * math.sin(angle) / dy
            cx = ax + SPHERE_RING_RADIUS_MM * math.cos(angle) / dx
            total += float(ndimage.map_coordinates(
                plane, [cy + oy / dy, cx + ox / dx], order=1, mode="nearest").sum())
        return -total

    start = np.array([axis_yx[0], axis_yx[1], theta0])
    simplex = np.array([start, start + [2 / dy, 0, 0], start + [0, 2 / dx, 0],
                        start + [0, 0, math.radians(3)]])
    res = optimize.minimize(cost, start, method="Nelder-Mead",
                            options={"initial_simplex": simplex, "xatol": 0.02,
                                     "fatol": 1e-9, "maxiter": 400})
    y, x, theta = (float(v) for v in res.x)
    if math.hypot((y - axis_yx[0]) * dy, (x - axis_yx[1]) * dx) > 15.0:
        return axis_yx, theta0  # ran off (no spheres to hold it): keep the lung's centre
    return (y, x), theta


def _ball_weights(radius_mm: float, spacing: tuple[float, float, float], flat: bool,
                  supersample: int = 4) -> np.ndarray:
    """Partial-volume weights of a ball (or, ``flat``, a disc) centred on the middle voxel."""
    dz, dy, dx = spacing
    n = [0 if flat else int(math.ceil(radius_mm / dz)) + 1,
         int(math.ceil(radius_mm / dy)) + 1, int(math.ceil(radius_mm / dx)) + 1]
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    axes = []
    for k, d in enumerate((dz, dy, dx)):
        centres = np.arange(-n[k], n[k] + 1, dtype=float)
        offsets = np.zeros(1) if flat and k == 0 else sub
        axes.append(((centres[:, None] + offsets[None]) * d).ravel())
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    inside = (zz ** 2 + yy ** 2 + xx ** 2 <= radius_mm ** 2).astype(float)
    sz = 1 if flat else supersample
    shape = (2 * n[0] + 1, sz, 2 * n[1] + 1, supersample, 2 * n[2] + 1, supersample)
    return np.asarray(inside.reshape(shape).mean(axis=(1, 3, 5)))


def _local(volume: np.ndarray, centre: tuple[int, int, int],
           half: tuple[int, int, int]) -> np.ndarray:
    """``volume[centre - half : centre + half + 1]``, edge-padded where it leaves the volume."""
    pads, slices = [], []
    for c, h, n in zip(centre, half, volume.shape, strict=True):
        lo, hi = c - h, c + h + 1
        pads.append((max(0, -lo), max(0, hi - n)))
        slices.append(slice(max(0, lo), min(n, hi)))
    return np.pad(volume[tuple(slices)], pads, mode="edge")


def _refine_sphere(volume: np.ndarray, spacing: tuple[float, float, float],
                   start: tuple[float, float, float], radius_mm: float,
                   search_mm: float) -> tuple[float, float, float]:
    """The sub-voxel centre near ``start`` maximising the mean in a sphere-sized ball."""
    flat = volume.shape[0] == 1
    kernel = _ball_weights(radius_mm, spacing, flat)
    kernel /= kernel.sum()
    kh = tuple(s // 2 for s in kernel.shape)
    reach = [0 if flat else int(math.ceil(search_mm / spacing[0])),
             int(math.ceil(search_mm / spacing[1])), int(math.ceil(search_mm / spacing[2]))]
    c0 = tuple(int(round(v)) for v in start)
    region = _local(volume, (c0[0], c0[1], c0[2]),
                    (kh[0] + reach[0] + 1, kh[1] + reach[1] + 1, kh[2] + reach[2] + 1))
    scores = ndimage.correlate(region, kernel, mode="nearest")
    mid = tuple(s // 2 for s in scores.shape)
    window = scores[mid[0] - reach[0]:mid[0] + reach[0] + 1,
                    mid[1] - reach[1]:mid[1] + reach[1] + 1,
                    mid[2] - reach[2]:mid[2] + reach[2] + 1]
    best = np.unravel_index(int(np.argmax(window)), window.shape)
    centre = []
    for axis in range(3):
        k = int(best[axis])
        idx = [mid[0] - reach[0] + int(best[0]), mid[1] - reach[1] + int(best[1]),
               mid[2] - reach[2] + int(best[2])]
        if volume.shape[axis] == 1 or (axis == 0 and flat):
            centre.append(float(c0[axis]))
            continue
        lo, hi = list(idx), list(idx)
        lo[axis] -= 1
        hi[axis] += 1
        three = np.array([scores[tuple(lo)], scores[tuple(idx)], scores[tuple(hi)]])
        centre.append(c0[axis] + (k - reach[axis]) + _parabola_offset(three))
    return centre[0], centre[1], centre[2]


def locate_phantom(values: np.ndarray, spacing_mm: Sequence[float],
                   config: NemaConfig | None = None) -> PhantomLocation:
    """Find the sphere plane, the phantom's axis and the six spheres (module docstring).

    ``values``: float ``(z, y, x)`` or ``(y, x)`` activity; ``spacing_mm``: ``(z, y, x)`` (or
    ``(y, x)``) mm. Raises :class:`NemaError` when no phantom is found.
    """
    cfg = config or NemaConfig()
    volume, spacing = _volume(values, spacing_mm)
    return _locate(volume, spacing, cfg)


def _locate(volume: np.ndarray, spacing: tuple[float, float, float],
            cfg: NemaConfig) -> PhantomLocation:
    spacing_yx = (spacing[1], spacing[2])
    smoothed = _smooth(volume, spacing, cfg.detect_sigma_mm)
    means = smoothed.mean(axis=(1, 2))
    inside = means >= 0.3 * float(np.percentile(means, 95))
    axis = _find_axis(smoothed[inside].mean(axis=0), spacing_yx)
    plane_guess = _find_plane(smoothed, axis, spacing_yx)
    angles = np.linspace(0, 2 * math.pi, _PROFILE_SAMPLES, endpoint=False)
    ys, xs = _ring_points(axis, spacing_yx, SPHERE_RING_RADIUS_MM, angles)
    profile = ndimage.map_coordinates(smoothed[plane_guess], [ys, xs], order=1, mode="nearest")
    theta0, handedness = _fit_rotation(profile)
    axis, theta0 = _refine_ring(smoothed[plane_guess], spacing_yx, axis, theta0, handedness)

    spheres: list[SphereLocation] = []
    for diameter, angle in zip(SPHERE_DIAMETERS_MM, _sphere_angles(theta0, handedness),
                               strict=True):
        start = (float(plane_guess),
                 axis[0] + SPHERE_RING_RADIUS_MM * math.sin(angle) / spacing[1],
                 axis[1] + SPHERE_RING_RADIUS_MM * math.cos(angle) / spacing[2])
        centre = _refine_sphere(volume, spacing, start, diameter / 2, cfg.sphere_search_mm)
        spheres.append(SphereLocation(
            diameter_mm=diameter, centre_vox=centre,
            centre_mm=(centre[0] * spacing[0], centre[1] * spacing[1], centre[2] * spacing[2])))

    # The ROIs' plane: nearest the three big spheres' centres (the best located), by volume.
    big = spheres[-3:]
    weights = np.array([s.diameter_mm ** 3 for s in big])
    plane = int(np.clip(round(float(np.dot(weights, [s.centre_vox[0] for s in big])
                                      / weights.sum())), 0, volume.shape[0] - 1))
    radius = float(np.mean([math.hypot((s.centre_vox[1] - axis[0]) * spacing[1],
                                       (s.centre_vox[2] - axis[1]) * spacing[2])
                            for s in spheres]))
    return PhantomLocation(
        plane_z=plane, axis_vox=(float(plane), axis[0], axis[1]),
        axis_mm=(plane * spacing[0], axis[0] * spacing[1], axis[1] * spacing[2]),
        ring_angle_deg=math.degrees(theta0) % 360.0, handedness=handedness,
        spheres=tuple(spheres), ring_radius_mm=radius)

