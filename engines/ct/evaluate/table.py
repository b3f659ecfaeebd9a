"""The CT evaluation's printed table (formatting only; the figures come from the report)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_table"]

_COLUMNS = (
    ("psnr_db", "PSNR dB", "{:8.2f}"),
    ("ssim", "SSIM", "{:7.4f}"),
    ("rmse_hu", "RMSE HU", "{:8.1f}"),
    ("hu_bias_abs", "|bias| HU", "{:9.1f}"),
    ("noise_sd_hu", "noise SD", "{:8.1f}"),
    ("mtf50_lp_per_cm", "MTF50 lp/cm", "{:11.2f}"),
)


def _cell(value: Any, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else fmt.format(value)


def format_table(report: dict[str, Any]) -> str:
    """One block per set and dose, one row per method; then the targets."""
    lines = []
    header = f"{'method':<10} " + " ".join(f"{title:>{len(fmt.format(0.0))}}"
                                           for _, title, fmt in _COLUMNS)
    for set_name, block in report["sets"].items():
        ref = block["reference"]
        lines.append(f"\n{set_name}: {len(block['slices'])} slices; reference noise SD "
                     f"{_cell(ref.get('noise_sd_hu'), '{:.1f}', 1)} HU, MTF50 "
                     f"{_cell(ref.get('mtf50_lp_per_cm'), '{:.2f}', 1)} lp/cm")
        for dose, entry in block["doses"].items():
            lines.append(f"  dose {dose}")
            lines.append("  " + header)
            for method, m in entry["methods"].items():
                cells = " ".join(_cell(m.get(k), fmt, len(fmt.format(0.0)))
                                 for k, _, fmt in _COLUMNS)
                lines.append(f"  {method:<10} {cells}")
    targets = report.get("targets", {})
    lines.append(f"\ntargets ({targets.get('model')}, dose {targets.get('dose')}, "
                 f"{targets.get('set')} slices):")
    for name, t in targets.items():
        if isinstance(t, dict) and "met" in t:
            value = t["value"]
            shown = "-" if value is None else f"{value:.3f}"
            lines.append(f"  {name:<30} {shown:>8}  {'met' if t['met'] else 'NOT met'}")
    if "note" in targets:
        lines.append(f"  {targets['note']}")
    for name, why in report.get("skipped", {}).items():
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)
