"""The readable table of an ECG evaluation report (formatting only: it reads the report)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from engines.ecg.evaluate.protocol import ENROL_BEATS, FAR_POINTS

__all__ = ["format_table"]


def _pct(v: Any, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f} %"


def format_table(report: dict[str, Any]) -> str:
    """The readable summary printed by ``sigstream eval ecg``."""
    lines = [
        f"ECG evaluation — cohort seed {report['seeds']['cohort']}"
        + (" (quick)" if report.get("quick") else "")
    ]
    sections: tuple[tuple[str, str, Callable[[dict[str, Any]], list[str]]], ...] = (
        ("closed_set", "closed set", _closed_set),
        ("verification", _VERIFICATION, functools.partial(_identity, _VERIFICATION)),
        ("open_set", _OPEN_SET, functools.partial(_identity, _OPEN_SET, open_set=True)),
        ("r_peaks", "R peaks", _r_peaks),
        ("real_recordings", "real recordings", _real_recordings),
    )
    for key, title, section_lines in sections:
        section = report.get(key)
        if section is None:
            continue
        lines.append("")
        if "skipped" in section:
            lines.append(f"{title}: skipped: {section['skipped']}")
        else:
            lines.extend(section_lines(section))
    t = report.get("targets", {})
    if t:
        lines.append("")
        for key, v in t.items():
            bound = v.get("target_min", v.get("target_max"))
            op = ">=" if "target_min" in v else "<="
            state = "—" if v["met"] is None else ("met" if v["met"] else "NOT met")
            lines.append(f"target {key} {op} {bound}: {_fmt(v['value'], '.4f')} -> {state}")
    lines.append(f"total {report['timing_s']['total']:.0f} s")
    return "\n".join(lines)


_VERIFICATION = "verification, seen subjects 0..17"
_OPEN_SET = "open set, subjects 1000.."


def _closed_set(cs: dict[str, Any]) -> list[str]:
    p = cs["paper"]
    lines = [f"closed set, 18 subjects, sessions 1-2 ({cs['n_beats']} beats):"]
    lines.append(f"  {'':<10}{'ours':>10}{'paper':>10}")
    for key in ("accuracy", "precision", "recall", "f1"):
        lines.append(f"  {key:<10}{_pct(cs[key]):>10}{_pct(p[key], 1):>10}")
    w = cs["worst_subject"]
    if w is not None:
        lines.append(
            f"  worst subject {w['subject']}: accuracy {_pct(w['accuracy'])} ({w['beats']} beats)"
        )
    a = cs["all_beats"]
    d = cs["data"]
    lines.append(
        f"  all {a['n_beats']} detected beats (quality-refused too): accuracy "
        f"{_pct(a['accuracy'])}, F1 {_pct(a['f1'])}; refused "
        f"{d['beats_refused_by_quality']}"
    )
    if cs["subjects_without_good_beats"]:
        lines.append(f"  no good beat at all: subjects {cs['subjects_without_good_beats']}")
    return lines


def _identity(title: str, v: dict[str, Any], *, open_set: bool = False) -> list[str]:
    lines = [f"{title} ({v['n_templates']} templates):"]
    e = v.get("enrolment")
    if e:
        lines.append(
            f"  gallery: enrolled {e['enrolled']} "
            f"(not enrolled: {e['not_enrolled'] or 'none'}), "
            f"{ENROL_BEATS} beats in {_fmt(e['seconds_to_enrol_median'], '.0f')} s median, "
            f"{_fmt(e['seconds_to_enrol_max'], '.0f')} s max"
        )
    for mode in ("single", "fused"):
        r = v[mode]
        if "eer" not in r:
            lines.append(f"  {mode:<7} skipped: {r.get('skipped')}")
            continue
        frr = "  ".join(
            f"FRR@FAR{100 * far:g}% {_pct(r[f'frr_at_far_{far:g}']['frr'])}"
            for far in FAR_POINTS
        )
        lines.append(
            f"  {mode:<7} EER {_pct(r['eer'])}  {frr}  "
            f"({r['n_genuine']} genuine / {r['n_impostor']} impostor)"
        )
        s = r.get("at_shipped_thresholds")
        if s:
            lines.append(
                f"          at accept {s['accept_threshold']:.3f}: FAR {_pct(s['far_accept'])}"
                f" FRR {_pct(s['frr_accept'])}; genuine {s['genuine_decisions']}"
            )
            lines.append(
                f"          claims at verify {s['verify_threshold']:.3f}: FAR "
                f"{_pct(s['claim_far'])} FRR {_pct(s['claim_frr'])}"
            )
    ww = v.get("without_worst_subject")
    if ww:
        lines.append(
            f"  per-subject EER median {_pct(v['per_subject_eer_single_median'])}; without "
            f"subject {ww['subject']} (EER {_pct(v['worst_subject']['eer_single'])}): "
            f"single {_pct(ww['eer_single'])}, fused {_pct(ww['eer_fused'])}"
        )
    if open_set:
        ratio = v["eer_ratio_to_seen"]
        lines.append(
            f"  EER ratio to seen: single {_fmt(ratio['single'])}, fused {_fmt(ratio['fused'])}"
        )
        ident = v.get("impostor_identification", {})
        if "single" in ident:
            lines.append(
                f"  never-enrolled impostors accepted as anyone: single "
                f"{_pct(ident['single'].get('accepted_as_anyone'), 3)}, fused "
                f"{_pct(ident['fused'].get('accepted_as_anyone'), 3)} "
                f"(gallery {ident['fused'].get('gallery_size')})"
            )
    return lines


def _r_peaks(rp: dict[str, Any]) -> list[str]:
    lines = [f"R peaks (simulated, +-{rp['tolerance_ms']:g} ms), sensitivity / PPV in %:"]
    snrs = list(rp["by_noise"])
    lines.append(f"  {'fs':>8}" + "".join(f"{s:>13}" for s in snrs))
    for fs in rp["by_fs_hz"]:
        row = f"  {fs + ' Hz':>8}"
        for s in snrs:
            c = rp["cells"][f"{fs}Hz_{s}"]
            sens = _fmt(None if c["sensitivity"] is None else 100 * c["sensitivity"], ".1f")
            ppv = _fmt(None if c["ppv"] is None else 100 * c["ppv"], ".1f")
            row += f"{sens + '/' + ppv:>13}"
        lines.append(row)
    row = f"  {'QRS SNR':>8}"
    for s in snrs:
        row += f"{_fmt(rp['by_noise'][s]['qrs_band_snr_db_median'], '.1f') + ' dB':>13}"
    lines.append(row + "  (median SNR in the 5-15 Hz band)")
    for label, key in (("session + mix", "overall"), ("muscle stress", "muscle_stress")):
        o = rp[key]
        lines.append(
            f"  pooled {label}: sensitivity {_pct(o['sensitivity'], 3)}, PPV "
            f"{_pct(o['ppv'], 3)} ({o['tp'] + o['fn']} beats)"
        )
    return lines


def _real_recordings(real: dict[str, Any]) -> list[str]:
    lines = ["real recordings, ours vs neurokit2:"]
    for name, e in real["recordings"].items():
        if "skipped" in e:
            lines.append(f"  {name}: skipped: {e['skipped']}")
            continue
        lines.append(
            f"  {name:<24} sens {_pct(e['sensitivity'])} PPV {_pct(e['ppv'])}  beats "
            f"{e['beats_ours']}/{e['beats_neurokit2']}  HR "
            f"{_fmt(e['mean_hr_bpm_ours'], '.1f')}/"
            f"{_fmt(e['mean_hr_bpm_neurokit2'], '.1f')}"
        )
    return lines


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)
