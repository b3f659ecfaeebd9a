"""Procedural anatomical CT phantom: one axial slice of a thorax or an abdomen, in HU.

The training data of the CT batch path (PAPERS.md §5, DATA.md "CT / PET / volumes") is
simulated: the few real CT slices that ship offline are kept for testing. This module draws the
normal-dose anatomy; :mod:`devices.ct_dose` turns it into low-dose / normal-dose pairs.

Geometry. A square slice of ``size`` pixels over a field of view (FOV) of ``size * pixel_mm``
millimetres; by default the FOV is fixed at :data:`FOV_MM` (500 mm), so a 256² slice has 1.95 mm
pixels and a 512² slice 0.98 mm pixels and the anatomy keeps its size in mm at every grid. Rows
run anterior (top) to posterior (bottom), columns patient right (left of the image) to patient
left (radiological display). Everything outside the body is air (-1000 HU), and the body lies
inside the FOV's inscribed circle, as a scan with ``circle=True`` needs.

Anatomy, drawn at random per slice (values in HU; "texture" is smooth Gaussian-filtered noise):

- body: a super-ellipse 250-400 mm wide (flatter at the back, where the patient lies), its
  outline perturbed by low harmonics; subcutaneous fat (-110..-85, texture) 4-35 mm thick
  and a muscle wall (+40..+60, texture) thin in front and thick behind (paraspinal muscles),
  both for a 330 mm wide body and in proportion to its width;
- spine: vertebral body and posterior arch (spinous and transverse processes) with a cortical
  shell (+1000..+1500) round trabecular bone (+200..+400, fine texture), the spinal canal
  (+5..+20);
- abdomen: visceral fat, bowel loops (wall, fluid, gas, air-fluid levels), stomach, liver
  (homogeneous parenchyma with hepatic vessels), gallbladder, spleen, kidneys with sinus fat,
  psoas, aorta and inferior vena cava, lower ribs;
- thorax: lungs (-870..-820 with parenchymal texture, a dependent density gradient, vessels
  and bronchi), heart (myocardium round a blood pool), pericardial and mediastinal fat,
  descending aorta, oesophagus, ribs and sternum, sometimes the liver dome;
- contrast (half of the slices): enhanced blood (aorta +150..+300) and organs.

Evaluation labels. Five disjoint tissue classes cover the slice: ``air`` (outside and gas),
``lung`` (parenchyma), ``fat``, ``soft_tissue`` (muscle, organs, blood, fluid) and ``bone``;
``body`` is everything inside the outline. ``uniform_regions`` are masks of regions whose HU is
exactly constant (liver parenchyma, blood pools, gallbladder): noise SD is measured there.
``edge_insert`` is a bone-like rod of known radius in the largest homogeneous organ, with a
clear annulus round it, for edge-spread / MTF measurement.

Partial volume. The labelled map is smoothed by a Gaussian of :data:`EDGE_SIGMA_PX` (0.5 px,
a 3 × 3 kernel) so edges are not aliased. A cortical shell thinner than a pixel is drawn one
pixel thick with its HU diluted by its thickness (the area-weighted mean), so coarse grids keep
the bone mass. Label masks are those of the map before smoothing; uniform regions keep more than
:data:`_MARGIN_PX` (1.5 px) from any other structure, beyond the kernel's reach, so their HU
stays exactly constant. A slice whose homogeneous organs are too small for the grid to hold a
uniform region beside the edge insert would be drawn again (never seen from 128² up).

Everything random comes from ``numpy.random.default_rng(seed)``: same seed and grid, same slice.
Pure numpy/scipy, no torch. About 0.1 s for a 512² slice, 0.02 s for 256².
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from devices.errors import ConfigError

__all__ = ["EDGE_SIGMA_PX", "FOV_MM", "EdgeInsert", "PhantomSlice", "Region", "anatomical_slice"]

Region = Literal["abdomen", "thorax"]

FOV_MM = 500.0
EDGE_SIGMA_PX = 0.5
# The smoothing kernel is 3 x 3 (truncated at 2 sigma = 1 px): it reaches sqrt(2) px, so a
# pixel farther than _MARGIN_PX from every other structure keeps its exact HU.
_TRUNCATE = 2.0
_MARGIN_PX = 1.5
_MAX_DRAWS = 20
_SIZE_RANGE = (128, 2048)
_FOV_RANGE_MM = (320.0, 1000.0)
_REGIONS: tuple[Region, ...] = ("abdomen", "thorax")


@dataclass(frozen=True, kw_only=True)
class EdgeInsert:
    """A bone-like rod, circular in the slice, inside a homogeneous organ.

    ``center_px`` is (row, col) in pixels, sub-pixel; within ``clear_radius_px`` of it the
    unsmoothed phantom holds only the rod (``hu_inside`` out to ``radius_px``) and the organ
    (``hu_outside``); the smoothed ``hu`` blurs that edge by a Gaussian of ``sigma_px``.
    """

    center_px: tuple[float, float]
    radius_px: float
    hu_inside: float
    hu_outside: float
    clear_radius_px: float
    sigma_px: float


@dataclass(frozen=True, kw_only=True)
class PhantomSlice:
    """One phantom slice. ``hu``: float32 (size, size) Hounsfield units; masks: bool (size, size).

    ``fat``, ``soft_tissue``, ``bone``, ``lung`` and ``air`` are disjoint and cover the slice;
    ``body`` is everything inside the body outline (lungs and gas included). ``lung`` is empty
    in abdomen slices. ``uniform_regions`` (never empty) are masks where ``hu`` is exactly
    constant. ``pixel_mm`` is the pixel size in mm. Rows run anterior to posterior, columns
    patient right to left; ``contrast`` tells whether blood and organs are enhanced.
    """

    hu: np.ndarray
    pixel_mm: float
    region: Region
    contrast: bool
    seed: int
    body: np.ndarray
    fat: np.ndarray
    soft_tissue: np.ndarray
    bone: np.ndarray
    lung: np.ndarray
    air: np.ndarray
    uniform_regions: tuple[np.ndarray, ...]
    edge_insert: EdgeInsert


def anatomical_slice(
    size: int = 512,
    *,
    seed: int,
    pixel_mm: float | None = None,
    region: Region | None = None,
) -> PhantomSlice:
    """Draw one anatomical slice of ``size``² pixels.

    ``pixel_mm`` defaults to ``FOV_MM / size`` (a 500 mm FOV); the FOV ``size * pixel_mm`` must
    lie within 320-1000 mm so the body (250-400 mm wide, narrower in a small FOV) fits its
    inscribed circle. ``region`` is ``"abdomen"``, ``"thorax"`` or ``None`` (drawn at random).
    Raises :class:`~devices.errors.ConfigError` for a size, pixel size or region out of range.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise ConfigError(f"ct phantom: size must be an int, got {size!r}")
    if not _SIZE_RANGE[0] <= size <= _SIZE_RANGE[1]:
        raise ConfigError(
            f"ct phantom: size must be in {_SIZE_RANGE[0]}..{_SIZE_RANGE[1]}, got {size}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"ct phantom: seed must be an int >= 0, got {seed!r}")
    px = FOV_MM / size if pixel_mm is None else float(pixel_mm)
    fov = size * px
    if not math.isfinite(fov) or not _FOV_RANGE_MM[0] <= fov <= _FOV_RANGE_MM[1]:
        raise ConfigError(
            f"ct phantom: FOV size * pixel_mm must be in {_FOV_RANGE_MM[0]:g}..{_FOV_RANGE_MM[1]:g}"
            f" mm, got {size} * {pixel_mm} mm"
        )
    if region is not None and region not in _REGIONS:
        raise ConfigError(f"ct phantom: region must be one of {_REGIONS} or None, got {region!r}")
    from devices.ct_anatomy import AnatomyBuilder  # it draws PhantomSlices: imported here

    rng = np.random.default_rng(int(seed))
    chosen: Region = region if region is not None else _REGIONS[int(rng.integers(2))]
    for _ in range(_MAX_DRAWS):
        # A slice whose homogeneous organs are too small for this grid is drawn again.
        phantom = AnatomyBuilder(int(size), px, rng, chosen, int(seed)).build()
        if phantom is not None:
            return phantom
    raise ConfigError(
        f"ct phantom: no {chosen} slice with a uniform region in {_MAX_DRAWS} draws at {size}²"
        f" and {px:g} mm pixels; use a finer grid"
    )
