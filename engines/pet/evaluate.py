"""``sigstream eval pet``: the paper's table (PAPERS.md §2) on simulated 2-minute / 10-minute
pairs, the NEMA recovery coefficients of every method against the EARL bands, and the served
model on the real NEMA IQ scan.

Protocol (fixed seeds):

- Test data: ``n_test`` independent realisations of the standard sphere plane of the NEMA IEC
  phantom (spheres 10:1 over 2 kBq/ml; :func:`engines.pet.data.pairs_for` "test", a stream no
  training or validation draws from); the 2-minute image is the input, the 10-minute image
  the reference.
- Methods: ``short`` (the input), ``long`` (the reference: its own recovery coefficients),
  ``noise_free`` (RCs only: OSEM of the 10-minute scan's expected counts, no Poisson noise —
  what the scanner's resolution alone allows; the 10-minute image's RCmax is lifted by its
  own noise, +0.3 on the 37 mm sphere),
  ``gaussian`` (sigma 1 px, 2 mm: the paper's), ``median`` (3 x 3: a median of "size 1" as the
  paper writes would change nothing), and every PET model whose weights exist
  (:data:`engines.pet.specs.PET_SPECS`, served as :class:`~engines.pet.denoise.PetDenoiser`
  serves them).
- Figures per method, means over the realisations: PSNR (dB), NRMSE (%) and SSIM against the
  10-minute image (:mod:`engines.pet.metrics`); per sphere (10 -> 37 mm) RCmax and RCmean (A50)
  against the true sphere activity and background variability (:func:`engines.pet.nema.
  analyse_nema`, which finds the spheres itself), their difference to the 10-minute image's,
  and the EARL1/EARL2 checks of the mean RCs.
- Targets (the served model): PSNR >= Gaussian + 0.5 dB and >= 2-minute + 2.95 dB (the paper's
  N2V gain); SSIM >= Gaussian's; every RC inside each EARL band the 10-minute image meets for
  that sphere; |RC - RC(10 min)| <= 0.05 for spheres of 17 mm and up (reported beside it:
  the same against the noise-free image).
- The real NEMA IQ scan (``../shared/data/pet-nema-iq``, when present): relative RCs and
  background variability before and after the served model (and the Gaussian, for scale).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from engines.pet.earl import earl_check
from engines.pet.metrics import nrmse_percent, psnr_db, ssim
from engines.pet.nema import NemaActivities, analyse_nema
from engines.pet.specs import PET_SPECS, SERVED_MODEL
from engines.report import jsonable, write_report

__all__ = ["REAL_SCAN", "TARGETS", "evaluate_pet"]

#: The real NEMA IQ scan of ``../shared/data`` (not in the repository).
REAL_SCAN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pet-nema-iq"
TARGETS = {"psnr_over_gaussian_db_min": 0.5, "psnr_gain_over_short_db_min": 2.95,
           "rc_diff_to_long_max": 0.05, "rc_diff_min_diameter_mm": 17.0}

Method = Callable[[np.ndarray], np.ndarray]


def _log(message: str) -> None:
    print(f"pet eval: {message}", file=sys.stderr, flush=True)


def _methods(backend: str) -> tuple[dict[str, Method], list[Any], dict[str, str]]:
    """The methods to compare, the denoisers to close, and the models skipped (no weights)."""
    from engines.pet.denoise import PetDenoiser

    methods: dict[str, Method] = {
        "short": lambda x: x,
        "gaussian": lambda x: ndimage.gaussian_filter(x, 1.0),
        "median": lambda x: ndimage.median_filter(x, size=3),
    }
    opened, skipped = [], {}
    for key, spec in PET_SPECS.items():
        if not spec.weights_path.exists():
            skipped[key] = f"no weights at {spec.weights_path}"
            continue
        denoiser = PetDenoiser(spec=spec, backend=backend, check=False).start()
        opened.append(denoiser)
        methods[key] = denoiser.denoise
    return methods, opened, skipped


def _rc_entry(reports: list[Any]) -> dict[str, Any]:
    """Mean RCs and background variability over realisations, with their EARL check."""
    rc_max = np.mean([r.rc_max for r in reports], axis=0)
    rc_mean = np.mean([r.rc_mean for r in reports], axis=0)
    earl = earl_check(rc_max.tolist(), rc_mean.tolist())
    return {"rc_max": rc_max.tolist(), "rc_mean": rc_mean.tolist(),
            "rc_max_sd": np.std([r.rc_max for r in reports], axis=0).tolist(),
            "background_variability_percent":
                np.mean([r.background_variability_percent for r in reports], axis=0).tolist(),
            "in_earl1": earl["in_earl1"], "in_earl2": earl["in_earl2"], "earl": earl}


def evaluate_pet(json_path: Path | str | None = None, quick: bool = False, *, n_test: int = 10,
                 seed: int = 0, backend: str = "auto") -> dict[str, Any]:
    """Run the protocol (module docstring), print the tables, write the report to
    ``json_path`` (if given) and return it. ``quick``: 3 realisations."""
    from devices.pet_sim import DEFAULT_CONFIG
    from engines.pet.data import pairs_for

    n = 3 if quick else n_test
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    pairs = pairs_for("test", n, seed=seed)
    timing["simulate"] = time.perf_counter() - t0
    phantom = pairs[0].phantom
    truth = NemaActivities(sphere_bqml=phantom.sphere_bq_ml,
                           background_bqml=phantom.background_bq_ml)
    spacing = (DEFAULT_CONFIG.pixel_mm, DEFAULT_CONFIG.pixel_mm)
    _log(f"{n} test realisations of the standard slice ({timing['simulate']:.0f} s)")

    methods, opened, skipped = _methods(backend)
    results: dict[str, dict[str, Any]] = {}
    try:
        long_reports = [analyse_nema(p.long, spacing, truth) for p in pairs]
        results["long"] = {"psnr_db": None, "nrmse": None, "ssim": None,
                           **_rc_entry(long_reports)}
        results["noise_free"] = {"psnr_db": None, "nrmse": None, "ssim": None,
                                 **_rc_entry([analyse_nema(_noise_free(phantom), spacing,
                                                           truth)])}
        for name, method in methods.items():
            t = time.perf_counter()
            images = [method(p.short) for p in pairs]
            timing[name] = time.perf_counter() - t
            refs = [p.long for p in pairs]
            scores = {key: [f(im, ref) for im, ref in zip(images, refs, strict=True)]
                      for key, f in (("psnr_db", psnr_db), ("nrmse", nrmse_percent),
                                     ("ssim", ssim))}
            entry: dict[str, Any] = {k: float(np.mean(v)) for k, v in scores.items()}
            entry.update({f"{k}_sd": float(np.std(v)) for k, v in scores.items()})
            entry.update(_rc_entry([analyse_nema(im, spacing, truth) for im in images]))
            results[name] = entry
            _log(f"{name}: PSNR {entry['psnr_db']:.2f} dB, SSIM {entry['ssim']:.3f} "
                 f"({timing[name]:.1f} s)")
        for entry in results.values():
            for ref, suffix in (("long", "long"), ("noise_free", "noise_free")):
                for kind in ("rc_max", "rc_mean"):
                    entry[f"{kind}_diff_{suffix}"] = (np.array(entry[kind])
                                                      - np.array(results[ref][kind])).tolist()
        served = SERVED_MODEL if SERVED_MODEL in results else None
        real = _real_scan(methods, served)
    finally:
        for denoiser in opened:
            denoiser.close()
    timing["total"] = time.perf_counter() - t0

    report: dict[str, Any] = {
        "protocol": {"test_realisations": n, "seed": seed, "slice": "standard sphere plane",
                     "reference": "the 10-minute OSEM image of the same counts",
                     "sphere_bq_ml": phantom.sphere_bq_ml,
                     "background_bq_ml": phantom.background_bq_ml,
                     "spheres_mm": [10, 13, 17, 22, 28, 37],
                     "scan": {k: v for k, v in vars(DEFAULT_CONFIG).items()},
                     "metrics": "engines.pet.metrics (PSNR peak = the reference's max; NRMSE "
                                "in %); RCs from engines.pet.nema.analyse_nema, A50"},
        "served": served,
        "methods": results,
        "skipped": skipped,
        "targets": _targets(results, served),
        "real": real,
        "timing_s": timing,
    }
    print(format_report(report))
    if json_path is not None:
        _log(f"wrote {write_report(jsonable(report), json_path)}")
    return jsonable(report)


def _targets(results: dict[str, dict[str, Any]], served: str | None) -> dict[str, Any]:
    if served is None:
        return {"model": None, "note": "no served weights: train them first"}
    ours, gauss, short, long = (results[k] for k in (served, "gaussian", "short", "long"))
    big = [i for i, d in enumerate((10, 13, 17, 22, 28, 37))
           if d >= TARGETS["rc_diff_min_diameter_mm"]]
    worst_diff, worst_free = (max(abs(ours[f"{kind}_diff_{ref}"][i])
                                  for kind in ("rc_max", "rc_mean") for i in big)
                              for ref in ("long", "noise_free"))
    kept = True
    for band in ("EARL1", "EARL2"):
        for kind in ("rc_max", "rc_mean"):
            for mine, ref in zip(ours["earl"][band][kind], long["earl"][band][kind], strict=True):
                kept &= mine["inside"] or not ref["inside"]
    gain_gauss = ours["psnr_db"] - gauss["psnr_db"]
    gain_short = ours["psnr_db"] - short["psnr_db"]
    ssim_gain = ours["ssim"] - gauss["ssim"]
    return {
        "model": served,
        "psnr_over_gaussian_db": {"value": gain_gauss,
                                  "target_min": TARGETS["psnr_over_gaussian_db_min"],
                                  "met": gain_gauss >= TARGETS["psnr_over_gaussian_db_min"]},
        "psnr_gain_over_short_db": {"value": gain_short,
                                    "target_min": TARGETS["psnr_gain_over_short_db_min"],
                                    "met": gain_short >= TARGETS["psnr_gain_over_short_db_min"]},
        "ssim_over_gaussian": {"value": ssim_gain, "target_min": 0.0, "met": ssim_gain >= 0.0},
        "rc_inside_bands_long_meets": {"value": bool(kept), "met": bool(kept)},
        "rc_diff_to_long_max_ge17mm": {"value": worst_diff,
                                       "target_max": TARGETS["rc_diff_to_long_max"],
                                       "met": worst_diff <= TARGETS["rc_diff_to_long_max"]},
        "rc_diff_to_noise_free_max_ge17mm": {
            "value": worst_free, "target_max": TARGETS["rc_diff_to_long_max"],
            "met": worst_free <= TARGETS["rc_diff_to_long_max"],
            "note": "not a target of the issue: the same bound against the noise-free image"},
    }


def _noise_free(phantom: Any) -> np.ndarray:
    """OSEM of ``phantom``'s expected 10-minute counts: the protocol without Poisson noise."""
    from devices.pet_sim import DEFAULT_CONFIG, PetScanner, scanned_activity

    scanner = PetScanner(DEFAULT_CONFIG)
    model = scanner.forward(scanned_activity(phantom, DEFAULT_CONFIG),
                            mu_per_mm=phantom.mu_per_mm)
    minutes = DEFAULT_CONFIG.long_min
    return scanner.osem(model.expected(minutes), model=model, minutes=minutes)


def _real_scan(methods: dict[str, Method], served: str | None) -> dict[str, Any]:
    """Relative RCs and background variability of the real scan before and after."""
    if not REAL_SCAN.is_dir():
        return {"skipped": f"{REAL_SCAN} is absent"}
    from devices.volumes import find_inputs, read_source

    volume = read_source(find_inputs([REAL_SCAN])[0], modality="PT")
    out: dict[str, Any] = {"path": str(REAL_SCAN), "shape": list(volume.values.shape),
                           "spacing_mm": list(volume.spacing_mm), "methods": {}}
    for name in ("short", "gaussian", served):
        if name is None:
            continue
        image = volume.values if name == "short" else np.stack(
            [methods[name](s) for s in volume.values])
        r = analyse_nema(image, volume.spacing_mm)
        out["methods"]["input" if name == "short" else name] = {
            "rc_max_relative": list(r.rc_max_relative),
            "rc_mean_relative": list(r.rc_mean_relative),
            "background_variability_percent": list(r.background_variability_percent),
            "background_bqml": r.background_bqml[-1], "sphere_plane_z": r.location.plane_z}
    return out


def format_report(report: dict[str, Any]) -> str:
    """The report's tables as text."""
    lines = [f"PET eval: {report['protocol']['test_realisations']} realisations; "
             f"reference: 10-minute image; served: {report['served']}",
             f"{'method':<12} {'PSNR dB':>8} {'NRMSE %':>8} {'SSIM':>6}  "
             f"{'RCmax 10..37 mm':<36} {'RCmean 10..37 mm':<36} EARL1 EARL2"]
    def num(m: dict[str, Any], key: str, fmt: str) -> str:
        v = m.get(key)
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt % v

    for name, m in report["methods"].items():
        rcs = " ".join(f"{v:.2f}" for v in m["rc_max"])
        rcm = " ".join(f"{v:.2f}" for v in m["rc_mean"])
        lines.append(f"{name:<12} {num(m, 'psnr_db', '%8.2f'):>8} "
                     f"{num(m, 'nrmse', '%8.2f'):>8} {num(m, 'ssim', '%6.3f'):>6}  "
                     f"{rcs:<36} {rcm:<36} "
                     f"{'yes' if m['in_earl1'] else 'no':<5} {'yes' if m['in_earl2'] else 'no'}")
    targets = report["targets"]
    if targets.get("model"):
        lines.append(f"targets ({targets['model']}):")
        for key, t in targets.items():
            if isinstance(t, dict) and "value" in t:
                value = t["value"]
                shown = f"{value:8.3f}" if isinstance(value, float) else f"{value!s:>8}"
                lines.append(f"  {key:<32} {shown}  {'met' if t['met'] else 'NOT met'}")
    real = report["real"]
    if "methods" in real:
        lines.append("real NEMA IQ scan (RC relative to the 37 mm sphere; N = background "
                      "variability %):")
        for name, m in real["methods"].items():
            lines.append(f"  {name:<12} rRCmax " + " ".join(f"{v:.2f}" for v in
                                                            m["rc_max_relative"])
                         + "  N " + " ".join(f"{v:.1f}" for v in
                                              m["background_variability_percent"]))
    else:
        lines.append(f"real scan: {real.get('skipped')}")
    return "\n".join(lines)
