"""The readable table of an ROI evaluation report (formatting only: it reads the report)."""

from __future__ import annotations

from typing import Any

from engines.roi.evaluate.real_spectra import format_real

__all__ = ["format_table"]


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _row(name: str, m: dict[str, Any]) -> str:
    b = m["by_snr"]
    return (
        f"{name:<18}{_fmt(m['roi_loss'], '.4f'):>9}{_fmt(m['roi_loss_unforgiven'], '.4f'):>9}"
        f"{_fmt(m.get('bce'), '.4f'):>8}{_fmt(m['peak_precision'], '.3f'):>7}"
        f"{_fmt(m['peak_recall'], '.3f'):>7}{_fmt(m['peak_f1'], '.3f'):>7}"
        f"{_fmt(b['low']['peak_f1'], '.3f'):>8}{_fmt(b['mid']['peak_f1'], '.3f'):>8}"
        f"{_fmt(b['high']['peak_f1'], '.3f'):>8}"
        f"{_fmt(m['position_mae_samples'], '.3f'):>8}"
        f"{_fmt(m['height_rel_err_median'], '.3f'):>7}"
        f"{_fmt(m['area_rel_err_median'], '.3f'):>7}"
        f"{_fmt(m['false_peaks_per_peak_free_spectrum'], '.3f'):>8}"
    )


def format_table(report: dict[str, Any]) -> str:
    """The readable summary printed by ``sigstream eval roi``."""
    lines = []
    sizes = report["sizes"]
    lines.append(
        f"ROI evaluation — {sizes['n_test']} paper-protocol test spectra "
        f"(baselines: first {sizes['n_baseline_subset']}), seed {report['seeds']['root']}"
    )
    head = (
        f"{'model':<18}{'ROI loss':>9}{'unforg.':>9}{'BCE':>8}{'P':>7}{'R':>7}{'F1':>7}"
        f"{'F1 low':>8}{'F1 mid':>8}{'F1 high':>8}{'pos MAE':>8}{'h rel':>7}{'a rel':>7}"
        f"{'FP/free':>8}"
    )
    lines.append(head)
    lines.append("-" * len(head))
    for name, m in report["models"].items():
        if "skipped" in m:
            lines.append(f"{name:<18}skipped: {m['skipped']}")
            continue
        lines.append(_row(name, m))
        if "heads_only" in m:
            lines.append(_row("  heads only", m["heads_only"]))
    ctx = report.get("context", {})
    if ctx:
        o = ctx["true_roi_readout"]["overall"]
        lines.append(
            f"{'(true ROIs)':<18}{'':>9}{'':>9}{'':>8}{_fmt(o['peak_precision'], '.3f'):>7}"
            f"{_fmt(o['peak_recall'], '.3f'):>7}{_fmt(o['peak_f1'], '.3f'):>7}"
            f"   resolvable peaks: {_fmt(ctx['resolvable_peak_fraction']['overall'], '.3f')}"
        )
    lines.append(
        "(h rel / a rel: median relative height / area error of matched peaks; "
        "FP/free: false peaks per peak-free spectrum)"
    )
    ood = report.get("ood", {}).get("models", {})
    if ood:
        lines.append("")
        lines.append(
            f"out of distribution ({report['sizes']['n_ood']} spectra, "
            f"{len(report['ood']['groups'])} groups):"
        )
        for name, m in ood.items():
            worst = min(m["by_group"].items(), key=lambda kv: kv[1]["peak_f1"] or 0.0)
            lines.append(
                f"  {name:<18} ROI loss {_fmt(m['roi_loss'], '.4f')}  F1 "
                f"{_fmt(m['peak_f1'], '.3f')}  worst group {worst[0]} "
                f"(F1 {_fmt(worst[1]['peak_f1'], '.3f')})"
            )
    wr = report.get("windowing_vs_resampling", {}).get("models", {})
    if wr:
        lines.append("")
        lines.append("windowing vs resampling (lengths 256-4096, pooled):")
        for name, res in wr.items():
            for label, r in res.items():
                if not isinstance(r, dict):
                    continue
                lines.append(
                    f"  {name:<12} {label:<34} ROI loss "
                    f"{_fmt(r['overall']['roi_loss'], '.4f')}  F1 "
                    f"{_fmt(r['overall']['peak_f1'], '.3f')}"
                )
    targets = report.get("targets", {})
    if targets:
        lines.append("")
    for key, t in targets.items():
        if not isinstance(t, dict) or "met" not in t:
            continue
        at_least = "target_min" in t
        bound = t["target_min"] if at_least else t["target_max"]
        value = t.get("value", t.get("margin"))
        who = f" ({t['model']})" if "model" in t else ""
        lines.append(
            f"target {key}{who} {'>=' if at_least else '<='} {bound}: {_fmt(value, '.4f')} "
            f"-> {'met' if t['met'] else 'NOT met'}"
        )
    real = report.get("real_spectra")
    if real:
        lines.append("")
        lines.append(format_real(real))
    lines.append(f"total {report['timing_s']['total']:.0f} s")
    return "\n".join(lines)
