"""The slices the CT evaluation scores: held-out phantoms and real slices, each scanned at the
low doses and at dose 1, with the masks the metrics need."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from devices.ct_dose import DEFAULT_VIEWS, low_and_reference
from devices.ct_phantom import EdgeInsert
from engines.ct.data import CtDataConfig, Purpose, scanned_phantoms
from engines.ct.evaluate.protocol import (
    DOSES,
    ERODE_PX,
    REAL_BLOCK_MM,
    REAL_THRESHOLDS_HU,
    EvalSizes,
)
from engines.errors import ConfigError

__all__ = ["EvalSlice", "phantom_set", "real_set", "real_slices"]

_TISSUES = ("fat", "soft_tissue", "bone")


@dataclass(frozen=True, kw_only=True)
class EvalSlice:
    """One evaluated slice. ``low[dose]`` and ``reference`` float32 (n, n) HU; ``body`` and
    each of ``tissues`` bool (n, n); ``uniform``: regions of uniform truth; ``edge``: the
    phantom's edge insert (``None`` for a real slice)."""

    name: str
    pixel_mm: float
    low: dict[float, np.ndarray]
    reference: np.ndarray
    body: np.ndarray
    tissues: dict[str, np.ndarray]
    uniform: tuple[np.ndarray, ...]
    edge: EdgeInsert | None


def _erode(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=ERODE_PX)


def phantom_set(purpose: Purpose, sizes: EvalSizes, *, doses: Sequence[float] = DOSES,
                ) -> list[EvalSlice]:
    """``sizes.n_test`` (test) or ``sizes.n_validation`` (validation) phantoms, scanned."""
    n = sizes.n_test if purpose == "test" else sizes.n_validation
    out = []
    for item in scanned_phantoms(purpose, n, config=CtDataConfig(size_px=sizes.size_px),
                                 doses=doses):
        ph = item.phantom
        out.append(EvalSlice(
            name=f"{ph.region}-{ph.seed}",
            pixel_mm=ph.pixel_mm,
            low=item.low,
            reference=item.reference,
            body=ph.body,
            tissues={t: _erode(getattr(ph, t)) for t in _TISSUES},
            uniform=ph.uniform_regions,
            edge=ph.edge_insert,
        ))
    return out


def real_slices(files: Sequence[str]) -> list[tuple[str, np.ndarray, float]]:
    """Every slice of each named file of pydicom's test data: ``(name, hu (n, n), pixel_mm)``.
    Raises :class:`~engines.errors.ConfigError` if a file is not installed (pydicom-data)."""
    from pydicom.data import get_testdata_file

    from devices.volumes import read_dicom_series

    out = []
    for name in files:
        path = get_testdata_file(name)
        if not isinstance(path, str):
            raise ConfigError(f"ct evaluation: {name} not found; install pydicom-data")
        volume = read_dicom_series([path])
        pixel_mm = float(volume.spacing_mm[1])
        for z, hu in enumerate(volume.values):
            if hu.shape[0] != hu.shape[1]:
                raise ConfigError(f"ct evaluation: {name} slice {z} is not square: {hu.shape}")
            label = name.removesuffix(".dcm") + (f"[{z}]" if volume.values.shape[0] > 1 else "")
            out.append((label, np.asarray(hu, dtype=np.float32), pixel_mm))
    return out


def _scanned_circle(n: int) -> np.ndarray:
    rows, cols = np.ogrid[:n, :n]
    return (rows - n // 2) ** 2 + (cols - n // 2) ** 2 <= (n // 2 - 2) ** 2


def _real_masks(hu: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, dict[str, np.ndarray],
                                                         tuple[np.ndarray, ...]]:
    """Body, eroded tissue classes and uniform blocks of a real slice, by thresholds.

    Uniform blocks: squares of ~:data:`REAL_BLOCK_MM` inside the eroded body whose mean lies
    in [-150, 250] HU and whose SD in the real slice is at most 1.25x the lower quartile of
    such blocks' SDs (the flattest quarter, and those nearly as flat; the real slice's own
    noise sets the scale)."""
    smooth = ndimage.gaussian_filter(hu.astype(np.float64), 1.0)
    solid = ndimage.binary_opening(smooth > -500.0, iterations=2)
    labels, count = ndimage.label(solid)
    if count == 0:
        raise ConfigError("ct evaluation: a real slice with no body (nothing above -500 HU)")
    largest = 1 + int(np.argmax(ndimage.sum_labels(solid, labels, range(1, count + 1))))
    body = ndimage.binary_fill_holes(labels == largest) & _scanned_circle(hu.shape[0])
    inner = _erode(body)
    tissues = {t: _erode((smooth >= lo) & (smooth <= hi)) & inner
               for t, (lo, hi) in REAL_THRESHOLDS_HU.items()}
    b = max(8, round(REAL_BLOCK_MM / pixel_mm))
    blocks, sds = [], []
    for r in range(0, hu.shape[0] - b + 1, b):
        for c in range(0, hu.shape[1] - b + 1, b):
            values = hu[r:r + b, c:c + b]
            if inner[r:r + b, c:c + b].all() and -150.0 <= float(values.mean()) <= 250.0:
                blocks.append((r, c))
                sds.append(float(values.std()))
    uniform = []
    if blocks:
        limit = 1.25 * float(np.percentile(sds, 25))
        for (r, c), sd in zip(blocks, sds, strict=True):
            if sd <= limit:
                region = np.zeros(hu.shape, dtype=bool)
                region[r:r + b, c:c + b] = True
                uniform.append(region)
    return body, tissues, tuple(uniform)


def real_set(files: Sequence[str], *, doses: Sequence[float] = DOSES) -> list[EvalSlice]:
    """Each real slice scanned at ``doses`` and at dose 1 (views ``720 * n / 512``; the noise
    seed is the slice's index), with threshold-based masks."""
    out = []
    for k, (name, hu, pixel_mm) in enumerate(real_slices(files)):
        views = max(1, round(DEFAULT_VIEWS * hu.shape[0] / 512))
        pair = low_and_reference(hu, pixel_mm, doses, seed=k, views=views)
        body, tissues, uniform = _real_masks(hu, pixel_mm)
        out.append(EvalSlice(name=name, pixel_mm=pixel_mm,
                             low=dict(zip(pair.doses, pair.low, strict=True)),
                             reference=pair.reference, body=body, tissues=tissues,
                             uniform=uniform, edge=None))
    return out
