"""``sigstream eval codec``: the shipped codecs against Opus and G.711 on held-out real speech.

Test speech: the real voice clips of ``alsa-utils`` (:func:`engines.codec.speech.real_speech`),
never used in training. Every clip is coded on its own, as a file would be: encoder engine,
range coder, decoder engine, overlap-add (:func:`engines.codec.codec.encode_signal` /
:func:`~engines.codec.codec.decode_signal`), on the chosen backend.

For every shipped codec and operating point:

- ``kbps``: measured from the bitstream (all frame bytes of all clips over their duration);
- SNR, segmental SNR, log-spectral distance per band (0-2, 2-4, 4-8 kHz), PESQ-WB and STOI
  (:mod:`engines.codec.quality`), each the mean over clips;
- Opus (libopus, VOIP, 20 ms, CBR) at the codec's *measured* bitrate, scored the same way, and
  the PESQ gap (ours - Opus) — negative where Opus wins;

and once G.711 μ-law (64 kbps, narrowband by design). Two claims are checked and reported
with the measured margin, met or not:

- the paper's ablation: at equal bitrate and frame, the model trained with the multi-band loss
  has a lower 4-8 kHz log-spectral distance than the one trained with plain MAE by >= 1 dB;
- PESQ-WB within 0.5 of Opus at the same measured bitrate at some point in 16-32 kbps.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from devices.audio import CODEC_FS
from engines.codec.baselines import g711_roundtrip, opus_at
from engines.codec.bitstream import LatentCoder
from engines.codec.codec import codec_tables, decode_signal, encode_signal, load_codec
from engines.codec.configs import CodecConfig
from engines.codec.quality import quality_report
from engines.codec.specs import CODECS
from engines.codec.speech import real_speech
from engines.engine import Engine
from engines.gates import Infer, TaskGate, compare, eager_infer
from engines.report import jsonable
from engines.spec import ModelSpec

__all__ = [
    "ABLATION_TARGET_DB", "PESQ_GAP_TARGET", "codec_gate", "evaluate_codec", "task_metric",
]

log = logging.getLogger(__name__)

ABLATION_TARGET_DB = 1.0
PESQ_GAP_TARGET = 0.5
_SCORES = ("snr_db", "segmental_snr_db", "pesq_wb", "stoi")


def _mean_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(values: list[Any]) -> float | None:
        vals = [v for v in values if v is not None]
        return float(np.mean(vals)) if vals else None

    out: dict[str, Any] = {k: mean([r[k] for r in reports]) for k in _SCORES}
    out["lsd_db"] = {band: mean([r["lsd_db"][band] for r in reports])
                     for band in reports[0]["lsd_db"]}
    return out


def _code(config: CodecConfig, encode: Any, decode: Any, coder: LatentCoder,
          clips: dict[str, np.ndarray], *, batch: int = 64) -> dict[str, Any]:
    """Every clip coded as a file (``encode``/``decode``: engines or callables), scored."""
    reports, total_bytes, seconds, t_code = [], 0, 0.0, 0.0
    for clip in clips.values():
        t0 = time.perf_counter()
        packets = encode_signal(clip, config, encode, coder, batch=batch)
        decoded = decode_signal(packets, clip.size, config, decode, coder)
        t_code += time.perf_counter() - t0
        total_bytes += sum(map(len, packets))
        seconds += clip.size / CODEC_FS
        reports.append(quality_report(clip, decoded))
    return {"kbps": 8 * total_bytes / seconds / 1000, "step": coder.step,
            **_mean_report(reports), "coding_rtf": t_code / seconds}


def _opus(kbps: float, clips: dict[str, np.ndarray]) -> dict[str, Any]:
    reports, got = [], []
    for clip in clips.values():
        decoded, measured = opus_at(clip, kbps)
        reports.append(quality_report(clip, decoded))
        got.append((measured, clip.size))
    total = sum(n for _, n in got)
    return {"kbps": sum(k * n for k, n in got) / total, **_mean_report(reports)}


def evaluate_codec(*, json_path: Path | None = None, backend: str = "auto",
                   codecs: tuple[str, ...] = tuple(CODECS)) -> dict[str, Any]:
    """Run the evaluation; write the report to ``json_path`` if given; return it."""
    t_start = time.perf_counter()
    clips = real_speech()
    seconds = sum(c.size for c in clips.values()) / CODEC_FS
    report: dict[str, Any] = {
        "speech": {"source": "alsa-utils /usr/share/sounds/alsa (real, held out)",
                   "clips": sorted(clips), "seconds": round(seconds, 2), "fs": CODEC_FS},
        "backend": backend,
        "codecs": {},
    }
    for key in codecs:
        with load_codec(key, backend=backend) as codec:
            c = codec.config
            points = []
            for kbps in sorted(codec.points):
                ours = _code(codec.config, codec.encoder, codec.decoder,
                             codec.coder(kbps=kbps), clips)
                opus = _opus(ours["kbps"], clips)
                gap = None if ours["pesq_wb"] is None or opus["pesq_wb"] is None \
                    else ours["pesq_wb"] - opus["pesq_wb"]
                points.append({"nominal_kbps": kbps, "ours": ours, "opus": opus,
                               "pesq_gap_vs_opus": gap})
                log.info("%s %g kbps: measured %.2f kbps, PESQ %.2f (Opus %.2f), LSD 4-8k "
                         "%.2f dB", key, kbps, ours["kbps"], ours["pesq_wb"] or float("nan"),
                         opus["pesq_wb"] or float("nan"), ours["lsd_db"]["4-8kHz"])
            report["codecs"][key] = {
                "frame": c.frame, "hop": c.hop, "algorithmic_delay_ms": c.delay_ms,
                "loss": CODECS[key].loss, "model": codec.model_id, "points": points}
    g711 = [quality_report(clip, g711_roundtrip(clip)[0]) for clip in clips.values()]
    report["g711_mulaw"] = {"kbps": 64.0, **_mean_report(g711)}
    report["claims"] = _claims(report["codecs"])
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    report = jsonable(report)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    print(_summary(report))
    return report


def _claims(codecs: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    by_config: dict[int, dict[str, tuple[str, Any]]] = {}
    for key, c in codecs.items():
        by_config.setdefault(c["frame"], {})[c["loss"]] = (key, c)
    ablations = []
    for pair in by_config.values():
        if "multiband" not in pair or "mae" not in pair:
            continue
        (mb_key, mb), (mae_key, mae) = pair["multiband"], pair["mae"]
        mae_points = {p["nominal_kbps"]: p["ours"] for p in mae["points"]}
        for p in mb["points"]:
            other = mae_points.get(p["nominal_kbps"])
            if other is None:
                continue
            ablations.append({
                "codecs": [mb_key, mae_key],
                "nominal_kbps": p["nominal_kbps"],
                "kbps": [p["ours"]["kbps"], other["kbps"]],
                "lsd_4_8khz_db": [p["ours"]["lsd_db"]["4-8kHz"], other["lsd_db"]["4-8kHz"]],
                "reduction_db": other["lsd_db"]["4-8kHz"] - p["ours"]["lsd_db"]["4-8kHz"],
                "pesq_wb": [p["ours"]["pesq_wb"], other["pesq_wb"]],
            })
    if ablations:
        claims["multiband_vs_mae"] = {
            "target": f"multi-band lowers the 4-8 kHz LSD by >= {ABLATION_TARGET_DB} dB",
            "order": ["multiband", "mae"], "points": ablations,
            "met": all(r["reduction_db"] >= ABLATION_TARGET_DB for r in ablations)}
    gaps = [(key, p["nominal_kbps"], p["ours"]["kbps"], p["pesq_gap_vs_opus"])
            for key, c in codecs.items() for p in c["points"]
            if 16 <= p["ours"]["kbps"] <= 32.5 and p["pesq_gap_vs_opus"] is not None]
    best = max(gaps, key=lambda g: g[3], default=None)
    claims["pesq_vs_opus"] = {
        "target": f"PESQ-WB within {PESQ_GAP_TARGET} of Opus at the same bitrate, 16-32 kbps",
        "best": None if best is None else {"codec": best[0], "nominal_kbps": best[1],
                                           "kbps": best[2], "gap": best[3]},
        "met": best is not None and best[3] >= -PESQ_GAP_TARGET}
    return claims


def _summary(report: dict[str, Any]) -> str:
    lines = [f"{'codec':<20}{'kbps':>7}{'PESQ':>6}{'Opus':>6}{'gap':>6}{'STOI':>6}"
             f"{'SNR':>6}{'LSD0-2':>8}{'LSD2-4':>8}{'LSD4-8':>8}"]

    def f(v: Any, w: int, d: int = 2) -> str:
        return f"{v:>{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"

    for key, c in report["codecs"].items():
        for p in c["points"]:
            o, lsd = p["ours"], p["ours"]["lsd_db"]
            lines.append(f"{key:<20}{f(o['kbps'], 7, 1)}{f(o['pesq_wb'], 6)}"
                         f"{f(p['opus']['pesq_wb'], 6)}{f(p['pesq_gap_vs_opus'], 6)}"
                         f"{f(o['stoi'], 6)}{f(o['snr_db'], 6, 1)}{f(lsd['0-2kHz'], 8)}"
                         f"{f(lsd['2-4kHz'], 8)}{f(lsd['4-8kHz'], 8)}")
    g = report["g711_mulaw"]
    lines.append(f"{'g711-mulaw':<20}{f(g['kbps'], 7, 1)}{f(g['pesq_wb'], 6)}{'':>12}"
                 f"{f(g['stoi'], 6)}{f(g['snr_db'], 6, 1)}{f(g['lsd_db']['0-2kHz'], 8)}"
                 f"{f(g['lsd_db']['2-4kHz'], 8)}{f(g['lsd_db']['4-8kHz'], 8)}")
    for name, claim in report["claims"].items():
        lines.append(f"{name}: {'met' if claim['met'] else 'NOT met'} ({claim['target']})")
    return "\n".join(lines)


def task_metric(encode: Any, decode: Any, *, key: str, kbps: float | None = None) -> float:
    """Mean PESQ-WB over the held-out real speech of codec ``key`` at ``kbps`` (default: its
    middle operating point) with frames encoded by ``encode`` and decoded by ``decode``
    (engines or any ``(B, ...) -> (B, ...)`` callables): the task metric an engine must leave
    unchanged (:mod:`engines.gates`)."""
    specs = CODECS[key]
    scales, points, _ = codec_tables(specs)
    kbps = sorted(points)[len(points) // 2] if kbps is None else kbps
    report = _code(specs.config, encode, decode, LatentCoder(scales, points[kbps]),
                   real_speech(), batch=1)
    return float("nan") if report["pesq_wb"] is None else float(report["pesq_wb"])


def codec_gate(spec: ModelSpec, engine: Engine) -> TaskGate:
    """The task gate of a codec engine (:mod:`engines.gates`): mean PESQ-WB on the real speech
    within 0.05 of eager, the engine encoding or decoding and the other half eager."""
    name = spec.name
    key = next(k for k, c in CODECS.items() if name in (c.encoder.name, c.decoder.name))
    encoding = name.endswith("_encoder")
    other = eager_infer(CODECS[key].decoder if encoding else CODECS[key].encoder)

    def metric(f: Infer) -> float:
        enc, dec = (f, other) if encoding else (other, f)
        return task_metric(enc, dec, key=key)

    return compare("PESQ-WB", metric, eager_infer(spec), engine, 0.05)
