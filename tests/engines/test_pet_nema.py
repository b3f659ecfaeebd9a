"""The NEMA NU-2 / EARL analysis (:mod:`engines.pet.nema`, :mod:`engines.pet.earl`) and the
``sigstream nema`` command, on phantoms rendered here by construction (the NEMA IEC body
geometry, partial-volume fractions by supersampling, each sphere at its own known
concentration) and on the real NEMA IQ scan in ``../shared/data/pet-nema-iq`` (skipped where
absent).

Run with ``-s`` to see the real scan's table.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from volume_files import write_series

from devices.errors import SigstreamError
from devices.pet_phantom import SPHERE_DIAMETERS_MM, SPHERE_RING_RADIUS_MM
from engines.pet.earl import EARL_BANDS, EARL_DIAMETERS_MM, earl_check
from engines.pet.nema import NemaActivities, analyse_nema
from engines.pet.nema_locate import NemaError, locate_phantom
from stream.errors import ConfigError
from stream.paths.pet.nema_command import add_nema_command
from stream.paths.spec import CliGroups, Environment

NEMA_PET = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pet-nema-iq"

TRUE_SPHERE = 10.0  # Bq/ml
TRUE_BACKGROUND = 1.0
#: Each sphere's concentration over TRUE_SPHERE, 10 -> 37 mm: the RCs by construction.
RC_BY_CONSTRUCTION = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


# -- a NEMA IEC body phantom rendered by construction ----------------------------------------

@dataclass(frozen=True)
class Rendered:
    values: np.ndarray                       # float32 (z, y, x), Bq/ml
    spacing: tuple[float, float, float]      # (z, y, x) mm
    centres: tuple[tuple[float, float, float], ...]  # sphere centres, voxels, 10 -> 37 mm
    axis: tuple[float, float]                # (y, x) voxels
    fractions: tuple[tuple[tuple[slice, ...], np.ndarray], ...]  # per sphere: box, fraction


def _subsamples(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n - 0.5


def _body_fraction(shape_yx: tuple[int, int], spacing_yx: tuple[float, float],
                   axis: tuple[float, float], dome_rad: float, ss: int = 4) -> np.ndarray:
    """Area fraction of each pixel inside the D-shaped body (dome toward ``dome_rad``)."""
    sub = _subsamples(ss)
    ys = ((np.arange(shape_yx[0])[:, None] + sub).ravel() - axis[0]) * spacing_yx[0]
    xs = ((np.arange(shape_yx[1])[:, None] + sub).ravel() - axis[1]) * spacing_yx[1]
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    u = xx * math.cos(dome_rad) + yy * math.sin(dome_rad)   # toward the dome
    v = np.abs(-xx * math.sin(dome_rad) + yy * math.cos(dome_rad))
    dome = (u >= -35) & (np.hypot(u + 35, v) <= 147)
    base = (u < -35) & (u >= -112) & ((v <= 70) | (np.hypot(v - 70, u + 35) <= 77))
    inside = (dome | base).astype(float)
    return inside.reshape(shape_yx[0], ss, shape_yx[1], ss).mean(axis=(1, 3))


def _disc_fraction(shape_yx: tuple[int, int], spacing_yx: tuple[float, float],
                   centre: tuple[float, float], radius_mm: float, ss: int = 4) -> np.ndarray:
    sub = _subsamples(ss)
    ys = ((np.arange(shape_yx[0])[:, None] + sub).ravel() - centre[0]) * spacing_yx[0]
    xs = ((np.arange(shape_yx[1])[:, None] + sub).ravel() - centre[1]) * spacing_yx[1]
    inside = (ys[:, None] ** 2 + xs[None] ** 2 <= radius_mm ** 2).astype(float)
    return inside.reshape(shape_yx[0], ss, shape_yx[1], ss).mean(axis=(1, 3))


def _ball_fraction(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                   centre: tuple[float, float, float], radius_mm: float,
                   ss: int = 5) -> tuple[tuple[slice, ...], np.ndarray]:
    """Volume fraction of each voxel inside a ball, in the ball's bounding box."""
    box, axes = [], []
    for k in range(3):
        if shape[k] == 1:  # a single slice cuts the ball through ``centre[0]``
            box.append(slice(0, 1))
            axes.append(np.array([(0.0 - centre[0]) * spacing[0]]))
            continue
        lo = max(0, int(math.floor(centre[k] - radius_mm / spacing[k])) - 1)
        hi = min(shape[k], int(math.ceil(centre[k] + radius_mm / spacing[k])) + 2)
        box.append(slice(lo, hi))
        axes.append(((np.arange(lo, hi)[:, None] + _subsamples(ss)).ravel() - centre[k])
                    * spacing[k])
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    inside = (zz ** 2 + yy ** 2 + xx ** 2 <= radius_mm ** 2).astype(float)
    sizes = [s.stop - s.start for s in box]
    subs = [1 if shape[k] == 1 else ss for k in range(3)]
    fraction = inside.reshape(sizes[0], subs[0], sizes[1], subs[1], sizes[2],
                              subs[2]).mean(axis=(1, 3, 5))
    return tuple(box), fraction


def render_nema(*, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                axis: tuple[float, float], plane_z: float, angle_deg: float, handedness: int,
                sphere_bqml: Sequence[float], background_bqml: float) -> Rendered:
    """The NEMA IEC body phantom: background ``background_bqml`` in the D-shaped body (a prism
    along z), a cold lung insert (51 mm) on ``axis`` (y, x voxels), sphere ``i`` (10 -> 37 mm)
    at ``sphere_bqml[i]`` centred in slice ``plane_z``; the 10 mm sphere in direction
    ``angle_deg`` from the axis (from +x toward +y), the others every 60 degrees toward
    ``handedness`` (+1: increasing angle), the dome between the 10 and 13 mm spheres as in the
    real phantom."""
    theta = math.radians(angle_deg)
    dome = theta + handedness * math.radians(30)
    body = _body_fraction(shape[1:], spacing[1:], axis, dome)
    lung = _disc_fraction(shape[1:], spacing[1:], axis, 25.5)
    values = np.repeat((background_bqml * body * (1 - lung))[None], shape[0], axis=0)
    centres, fractions = [], []
    for i, (diameter, concentration) in enumerate(zip(SPHERE_DIAMETERS_MM, sphere_bqml,
                                                      strict=True)):
        angle = theta + handedness * i * math.pi / 3
        centre = (plane_z, axis[0] + SPHERE_RING_RADIUS_MM * math.sin(angle) / spacing[1],
                  axis[1] + SPHERE_RING_RADIUS_MM * math.cos(angle) / spacing[2])
        box, fraction = _ball_fraction(shape, spacing, centre, diameter / 2)
        values[box] = values[box] * (1 - fraction) + concentration * fraction
        centres.append(centre)
        fractions.append((box, fraction))
    return Rendered(values=values.astype(np.float32), spacing=spacing, centres=tuple(centres),
                    axis=axis, fractions=tuple(fractions))


def _a50_of_rendering(phantom: Rendered, i: int) -> float:
    """The A50 mean of sphere ``i`` straight from the rendering: its voxels (fraction > 0) at
    or above half its hottest voxel. No localisation involved."""
    box, fraction = phantom.fractions[i]
    region = phantom.values[box][fraction > 0].astype(np.float64)
    return float(region[region >= 0.5 * region.max()].mean())


def _blur_and_noise(values: np.ndarray, spacing: tuple[float, float, float], fwhm_mm: float,
                    noise_sd: float, seed: int) -> np.ndarray:
    sigma = [0.0 if values.shape[0] == 1 else fwhm_mm / 2.355 / spacing[0],
             fwhm_mm / 2.355 / spacing[1], fwhm_mm / 2.355 / spacing[2]]
    blurred = ndimage.gaussian_filter(values.astype(np.float64), sigma)
    noisy = blurred + np.random.default_rng(seed).normal(0.0, noise_sd, values.shape)
    return np.clip(noisy, 0, None).astype(np.float32)


def _centre_errors_mm(found: Sequence[tuple[float, float, float]],
                      truth: Sequence[tuple[float, float, float]],
                      spacing: tuple[float, float, float]) -> list[float]:
    return [math.dist([a * s for a, s in zip(f, spacing, strict=True)],
                      [b * s for b, s in zip(t, spacing, strict=True)])
            for f, t in zip(found, truth, strict=True)]


@pytest.fixture(scope="module")
def exact_phantom() -> Rendered:
    """3-D, unblurred, noiseless, shifted off the image centre and off the voxel grid."""
    return render_nema(shape=(21, 160, 176), spacing=(2.78, 2.0, 2.0), axis=(76.3, 91.6),
                       plane_z=10.4, angle_deg=-60.0, handedness=-1,
                       sphere_bqml=[k * TRUE_SPHERE for k in RC_BY_CONSTRUCTION],
                       background_bqml=TRUE_BACKGROUND)


# -- the analysis on phantoms by construction ------------------------------------------------

def test_exact_phantom_gives_the_constructed_recovery_coefficients(
        exact_phantom: Rendered) -> None:
    p = exact_phantom
    report = analyse_nema(p.values, p.spacing,
                          NemaActivities(sphere_bqml=TRUE_SPHERE,
                                         background_bqml=TRUE_BACKGROUND))
    errors = _centre_errors_mm([s.centre_vox for s in report.location.spheres], p.centres,
                               p.spacing)
    assert max(errors) < 1.0, errors
    assert report.mode == "absolute" and report.rc_max is not None and report.rc_mean is not None
    # RCmax: the hottest voxel lies wholly inside every sphere, so it is k_i exactly.
    np.testing.assert_allclose(report.rc_max, RC_BY_CONSTRUCTION, atol=1e-6)
    # RCmean: A50 of an unblurred sphere keeps its partial-volume edge voxels above half the
    # maximum, so it is below k_i by a known amount: the rendering's own A50.
    expected_mean = [_a50_of_rendering(p, i) / TRUE_SPHERE for i in range(6)]
    np.testing.assert_allclose(report.rc_mean, expected_mean, atol=0.02)
    assert all(m < k for m, k in zip(report.rc_mean, RC_BY_CONSTRUCTION, strict=True))
    np.testing.assert_allclose(report.rc_max_relative,
                               [k / RC_BY_CONSTRUCTION[-1] for k in RC_BY_CONSTRUCTION],
                               atol=1e-6)
    # Uniform background, cold lung: no variability, no residual; the background recovers.
    assert report.background_rois == 60 and len(report.background_planes) == 5
    assert max(report.background_variability_percent) < 1e-3
    assert report.lung_residual_percent == pytest.approx(0.0, abs=1e-6)
    assert report.background_recovery == pytest.approx(1.0, abs=1e-6)
    # Q_H of the 37 mm sphere (k = 1): its 2-D ROI on its own equator is nearly all sphere.
    assert report.contrast_recovery_percent is not None
    assert report.contrast_recovery_percent[-1] == pytest.approx(100.0, abs=5.0)
    assert report.contrast_recovery_percent == tuple(sorted(report.contrast_recovery_percent))
    loc = report.location
    assert loc.handedness == -1 and loc.ring_angle_deg == pytest.approx(300.0, abs=1.0)
    assert loc.plane_z == 10 and loc.ring_radius_mm == pytest.approx(SPHERE_RING_RADIUS_MM, abs=0.5)
    assert loc.axis_vox[1:] == pytest.approx(p.axis, abs=0.25)
    json.loads(report.to_json())
    assert "EARL1" in report.format_table()


def test_rotated_mirrored_blurred_noisy_phantom_is_found() -> None:
    """A placement no default would guess: rotated by 37 degrees, the other handedness, shifted;
    blurred to 6.5 mm FWHM with noise; ratio 4 as NU-2 prescribes."""
    spacing = (2.78, 2.0, 2.0)
    p = render_nema(shape=(23, 176, 168), spacing=spacing, axis=(93.2, 80.7), plane_z=11.7,
                    angle_deg=37.0, handedness=1, sphere_bqml=[4.0] * 6, background_bqml=1.0)
    values = _blur_and_noise(p.values, spacing, 6.5, 0.05, seed=3)
    loc = locate_phantom(values, spacing)
    assert loc.handedness == 1 and loc.ring_angle_deg == pytest.approx(37.0, abs=3.0)
    errors = _centre_errors_mm([s.centre_vox for s in loc.spheres], p.centres, spacing)
    assert max(errors[2:]) < 1.5 and max(errors) < 3.0, errors
    report = analyse_nema(values, spacing, NemaActivities(ratio=4.0))
    assert report.mode == "ratio" and report.earl is not None
    assert report.rc_mean_relative[0] < report.rc_mean_relative[2] < report.rc_mean_relative[4]
    assert report.contrast_recovery_percent is not None
    assert 40 < report.contrast_recovery_percent[-1] < 100
    # White noise of SD 5 % (background 1) averaged over a disc of n pixels of 4 mm^2:
    # N = 5 % / sqrt(n), blur aside (it came before the noise).
    expected = [5.0 / math.sqrt(math.pi * (d / 2) ** 2 / 4.0) for d in SPHERE_DIAMETERS_MM]
    np.testing.assert_allclose(report.background_variability_percent, expected, rtol=0.3)


def test_a_single_2d_slice() -> None:
    """The simulated data's form: one 200 x 200 slice at 2 mm through the spheres' equator."""
    spacing = (2.0, 2.0, 2.0)
    p = render_nema(shape=(1, 200, 200), spacing=spacing, axis=(99.5, 99.5), plane_z=0.0,
                    angle_deg=-60.0, handedness=-1, sphere_bqml=[10.0] * 6,
                    background_bqml=1.0)
    values = _blur_and_noise(p.values, spacing, 6.5, 0.03, seed=5)[0]  # (y, x)
    report = analyse_nema(values, spacing[1:], NemaActivities(sphere_bqml=10.0,
                                                              background_bqml=1.0))
    errors = _centre_errors_mm([s.centre_vox for s in report.location.spheres], p.centres,
                               spacing)
    assert max(errors) < 1.5, errors
    assert report.shape == (1, 200, 200) and report.background_rois == 12
    assert report.background_planes == (0,) and any("plane" in n for n in report.notes)
    assert report.rc_max is not None and report.rc_mean is not None
    assert 0.9 < report.rc_max[-1] < 1.1 and report.rc_mean[0] < report.rc_mean[-1]
    assert report.earl is not None


def test_exact_phantom_2d_recovery_coefficients() -> None:
    """Unblurred 2-D slice: RCmax exact, RCmean the rendering's own 2-D A50."""
    spacing = (2.0, 2.0, 2.0)
    p = render_nema(shape=(1, 200, 200), spacing=spacing, axis=(101.3, 98.2), plane_z=0.0,
                    angle_deg=100.0, handedness=1,
                    sphere_bqml=[k * TRUE_SPHERE for k in RC_BY_CONSTRUCTION],
                    background_bqml=TRUE_BACKGROUND)
    report = analyse_nema(p.values, spacing, NemaActivities(sphere_bqml=TRUE_SPHERE))
    assert report.rc_max is not None and report.rc_mean is not None
    np.testing.assert_allclose(report.rc_max, RC_BY_CONSTRUCTION, atol=1e-6)
    np.testing.assert_allclose(report.rc_mean,
                               [_a50_of_rendering(p, i) / TRUE_SPHERE for i in range(6)],
                               atol=0.02)
    assert report.contrast_recovery_percent is None  # no ratio known


def test_relative_mode_and_refusals(exact_phantom: Rendered) -> None:
    p = exact_phantom
    report = analyse_nema(p.values, p.spacing)
    assert report.mode == "relative" and report.rc_max is None and report.earl is None
    assert report.contrast_recovery_percent is None
    assert report.rc_mean_relative[-1] == 1.0
    with pytest.raises(ConfigError):
        NemaActivities(background_bqml=1.0, ratio=4.0)
    with pytest.raises(ConfigError):
        NemaActivities(ratio=1.0)
    with pytest.raises(ConfigError):
        NemaActivities(sphere_bqml=-3.0)
    with pytest.raises(NemaError, match="lung insert"):
        analyse_nema(np.ones((3, 128, 128), np.float32), (2.78, 2.0, 2.0))
    with pytest.raises(NemaError, match="field of view"):
        analyse_nema(np.ones((3, 40, 40), np.float32), (2.78, 2.0, 2.0))
    bad = p.values.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(NemaError, match="NaN"):
        analyse_nema(bad, p.spacing)


# -- EARL ------------------------------------------------------------------------------------

def test_earl_check_on_known_values() -> None:
    mid1 = {k: [(EARL_BANDS["EARL1"][k][d].low + EARL_BANDS["EARL1"][k][d].high) / 2
                for d in EARL_DIAMETERS_MM] for k in ("rc_max", "rc_mean")}
    result = earl_check(mid1["rc_max"], mid1["rc_mean"])
    assert result["in_earl1"] is True and result["EARL1"]["passed"] is True
    # EARL1's mid-band RCmax of the 37 mm sphere (1.055) lies in EARL2 too, its 10 mm one
    # (0.455) below EARL2's 0.52: EARL2 fails on that sphere only.
    rows = result["EARL2"]["rc_max"]
    assert [r["inside"] for r in rows][0] is False and result["in_earl2"] is False
    # Band edges are inside; just beyond is not.
    lows = [EARL_BANDS["EARL2"]["rc_mean"][d].low for d in EARL_DIAMETERS_MM]
    highs = [EARL_BANDS["EARL2"]["rc_max"][d].high for d in EARL_DIAMETERS_MM]
    assert earl_check(highs, lows)["in_earl2"] is True
    edge = earl_check([h + 0.01 for h in highs], lows)
    assert edge["in_earl2"] is False and edge["EARL2"]["rc_mean_inside"] is True
    assert earl_check([math.nan] * 6, lows)["EARL2"]["rc_max_inside"] is False
    with pytest.raises(ValueError, match="6 values"):
        earl_check([1.0] * 5, lows)
    assert EARL_BANDS["EARL1"]["rc_mean"][37.0].low == 0.76
    assert EARL_BANDS["EARL2"]["rc_max"][10.0].high == 0.88


# -- the real scan ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_scan() -> tuple[np.ndarray, tuple[float, float, float]]:
    if not NEMA_PET.is_dir():
        pytest.skip(f"{NEMA_PET} is absent (the real NEMA IQ PET scan lives outside the repo)")
    from devices.volumes import find_inputs, read_source

    (source,) = find_inputs([NEMA_PET])
    volume = read_source(source, modality="PT")
    return volume.values, volume.spacing_mm


def test_the_real_nema_scan(real_scan: tuple[np.ndarray, tuple[float, float, float]]) -> None:
    values, spacing = real_scan
    report = analyse_nema(values, spacing)
    print()
    print(report.format_table())
    loc = report.location
    ay, ax = loc.axis_mm[1], loc.axis_mm[2]
    for s in loc.spheres:
        assert math.hypot(s.centre_mm[1] - ay, s.centre_mm[2] - ax) == pytest.approx(
            SPHERE_RING_RADIUS_MM, abs=5.0)
        assert abs(s.centre_vox[0] - loc.plane_z) < 2.0  # one plane of spheres
    # The spheres lie 60 degrees apart round the ring.
    angles = sorted(math.degrees(math.atan2(s.centre_mm[1] - ay, s.centre_mm[2] - ax)) % 360
                    for s in loc.spheres)
    gaps = np.diff(angles + [angles[0] + 360])
    np.testing.assert_allclose(gaps, 60.0, atol=6.0)
    assert 35 <= loc.plane_z <= 50  # the hot slices (seen by eye: 38-47)
    # Partial volume: recovery grows with size; the big spheres recover alike.
    rel = report.rc_mean_relative
    assert rel[0] < rel[2] < rel[4] and rel[0] < 0.95 and rel[1] < 0.95
    assert 0.9 < rel[3] <= 1.15 and 0.9 < rel[4] <= 1.15
    assert all(a <= b + 0.05 for a, b in zip(rel, rel[1:], strict=False))
    # Noise: smaller ROIs vary more; a clinical scan's figures are a few percent.
    n = report.background_variability_percent
    assert n[0] > n[-1] and 1.0 < n[-1] < 10.0
    assert report.background_rois == 60
    assert 0.0 <= report.lung_residual_percent < 15.0
    # Mirrored left-right (a scan viewed from the other end): the other handedness, the same
    # spheres.
    mirrored = analyse_nema(values[:, :, ::-1], spacing)
    assert mirrored.location.handedness == -loc.handedness
    width_mm = (values.shape[2] - 1) * spacing[2]
    for s, m in zip(loc.spheres, mirrored.location.spheres, strict=True):
        assert m.centre_mm[2] == pytest.approx(width_mm - s.centre_mm[2], abs=0.5)
    np.testing.assert_allclose(mirrored.rc_mean_relative, rel, atol=0.01)


# -- the command -----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sigstream")
    sub = parser.add_subparsers(dest="command", required=True)
    add_nema_command(CliGroups(top=sub, run=None, source=None, denoise=None, train=None,
                               eval=None, keys=None))
    return parser


def _run(argv: list[str], tmp_path: Path) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args, Environment(cache_dir=tmp_path, data_dir=tmp_path)))


def _write_nifti(values: np.ndarray, spacing: tuple[float, float, float], path: Path) -> Path:
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(values.transpose(2, 1, 0), affine), path)
    return path


def test_command_on_a_nifti_with_reference(exact_phantom: Rendered, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    p = exact_phantom
    clean = _write_nifti(p.values, p.spacing, tmp_path / "ten_min.nii.gz")
    noisy = _write_nifti(_blur_and_noise(p.values, p.spacing, 0.0, 0.05, seed=1), p.spacing,
                         tmp_path / "two_min.nii.gz")
    out = tmp_path / "report" / "nema.json"
    assert _run(["nema", str(noisy), "--reference", str(clean), "--sphere-activity", "10",
                 "--ratio", "10", "--json", str(out)], tmp_path) == 0
    text = capsys.readouterr().out
    assert "RCmax" in text and "PSNR" in text and "EARL1" in text
    document = json.loads(out.read_text())
    assert document["nema"]["mode"] == "absolute"
    np.testing.assert_allclose(document["nema"]["rc_max"], RC_BY_CONSTRUCTION, atol=0.25)
    reference = document["reference"]
    assert reference["psnr_db"] > 20 and 0 < reference["nrmse_percent"] < 20
    assert 0 < reference["ssim"] < 1
    with pytest.raises(SystemExit):  # argparse: one of the two, not both
        _parser().parse_args(["nema", str(noisy), "--ratio", "4", "--background-activity", "1"])


def test_command_refusals_are_one_line(exact_phantom: Rendered, tmp_path: Path) -> None:
    p = exact_phantom
    good = _write_nifti(p.values, p.spacing, tmp_path / "scan.nii")
    corrupt = tmp_path / "corrupt.nii"
    corrupt.write_bytes(b"not a nifti at all" * 10)
    with pytest.raises(SigstreamError) as caught:
        _run(["nema", str(corrupt)], tmp_path)
    assert str(corrupt) in str(caught.value) and "\n" not in str(caught.value)
    short = _write_nifti(p.values[:5], p.spacing, tmp_path / "short.nii")
    with pytest.raises(SigstreamError, match="shape") as caught:
        _run(["nema", str(good), "--reference", str(short)], tmp_path)
    assert "\n" not in str(caught.value)
    flat = _write_nifti(np.ones((3, 128, 128), np.float32), p.spacing, tmp_path / "flat.nii")
    with pytest.raises(SigstreamError, match="flat.nii: no cold lung insert"):
        _run(["nema", str(flat)], tmp_path)
    with pytest.raises(SigstreamError, match="ratio"):
        _run(["nema", str(good), "--ratio", "0.5"], tmp_path)
    write_series(tmp_path / "ct")
    with pytest.raises(SigstreamError, match="modality CT, expected PT") as caught:
        _run(["nema", str(tmp_path / "ct")], tmp_path)
    assert "\n" not in str(caught.value)
    with pytest.raises(SigstreamError, match="field of view"):  # read, but no phantom in it
        _run(["nema", str(tmp_path / "ct"), "--force"], tmp_path)


def test_command_on_the_real_scan(real_scan: tuple[np.ndarray, tuple[float, float, float]],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nema.json"
    assert _run(["nema", str(NEMA_PET), "--reference", str(NEMA_PET), "--json", str(out)],
                tmp_path) == 0
    text = capsys.readouterr().out
    assert "89 x 192 x 192 voxels" in text and "rRCmean" in text and "SSIM 1.0000" in text
    document = json.loads(out.read_text())
    assert document["nema"]["mode"] == "relative" and document["reference"]["psnr_db"] is None
