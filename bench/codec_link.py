"""Codec benchmark: real-time factor per stream beside Opus, latency through the link, and how
many simultaneous links two cores sustain. Prints JSON.

    python -m bench.codec_link                                  # all three parts
    python -m bench.codec_link --links 10,20,30 --seconds 20 --json runs/codec_bench.json

1. ``rtf``: per codec and operating point, the real held-out speech (``alsa-utils`` clips, one
   after the other) pushed through :class:`~engines.codec.codec.StreamEncoder` in 10 ms blocks
   and every packet through :class:`~engines.codec.codec.StreamDecoder` — engine calls of one
   frame (batch 1), range coding, overlap-add, exactly what a link does — in this process
   pinned to one core, intra-op threads 1, on ``--backend`` (the CPU-compiled backend by
   default) and on eager. ``rtf`` = CPU seconds / audio seconds (target <= 0.05 for encoder +
   decoder). Opus (libopus, VOIP, 20 ms, CBR at the same measured bitrate) in the same run.
2. ``latency``: one link, ``sigstream run codec-tx`` reading a WAV in real time (a block is
   handed out once its last sample would have been captured) to ``sigstream run codec-rx``
   writing a WAV, two processes over TCP; the receiver's capture-to-playout latency per frame
   (p50/p99), next to the algorithmic delay (one frame) and the jitter buffer.
3. ``links``: N links at once (N senders, N receivers: 2N processes), each sending the speech
   in a loop in real time for ``--seconds``. A load is sustained when every receiver played
   every frame (none concealed, none late) and its p99 latency stays within
   ``algorithmic delay + jitter buffer + 50 ms``. CPU per link: both ends' own CPU time while
   streaming (their reports; start-up, imports and engine loading, excluded) over the audio
   time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench.harness import cli, emit, free_port
from devices.audio import CODEC_FS, write_audio


def _speech() -> np.ndarray:
    from engines.codec.speech import real_speech

    return np.concatenate(list(real_speech().values()))


def bench_rtf(keys: list[str], backend: str, speech: np.ndarray) -> list[dict[str, Any]]:
    from engines.codec.baselines import opus_speed
    from engines.codec.codec import load_codec

    seconds = speech.size / CODEC_FS
    block = CODEC_FS // 100
    rows = []
    for key in keys:
        for engine_backend in dict.fromkeys((backend, "eager")):
            with load_codec(key, backend=engine_backend, threads=1, max_batch=1) as codec:
                for kbps in sorted(codec.points):
                    enc = codec.stream_encoder(kbps)
                    dec = codec.stream_decoder(enc.coder.step)
                    t_enc = t_dec = 0.0
                    n_bytes = 0
                    for i in range(0, speech.size, block):
                        c0 = time.process_time()
                        packets = enc.push(speech[i:i + block])
                        c1 = time.process_time()
                        for p in packets:
                            dec.decode(p)
                            n_bytes += len(p)
                        t_enc += c1 - c0
                        t_dec += time.process_time() - c1
                    kbps_measured = 8 * n_bytes / seconds / 1000
                    row = {"codec": key, "backend": engine_backend, "nominal_kbps": kbps,
                           "kbps": round(kbps_measured, 2),
                           "encode_rtf": round(t_enc / seconds, 4),
                           "decode_rtf": round(t_dec / seconds, 4),
                           "rtf": round((t_enc + t_dec) / seconds, 4),
                           "algorithmic_delay_ms": codec.config.delay_ms}
                    if engine_backend == backend:
                        opus = opus_speed(speech, kbps_measured, repeats=3)
                        row["opus_rtf"] = round(opus["encode_rtf"] + opus["decode_rtf"], 4)
                        row["rtf_vs_opus"] = round(row["rtf"] / max(row["opus_rtf"], 1e-9), 2)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
    return rows


def run_links(n: int, *, codec: str, kbps: float, backend: str, seconds: float, jitter_ms: float,
              wav: Path, tmp: Path) -> dict[str, Any]:
    """``n`` links at once; returns the receivers' reports and the CPU used."""
    from engines.codec.codec import CODEC_LINK_MAX_BATCH, load_codec
    from engines.codec.configs import CONFIGS
    from engines.codec.specs import CODECS

    # One engine cache for every link end, built here first: the ends load, none builds.
    cache = tmp / "engines"
    load_codec(codec, backend=backend, cache_dir=cache, max_batch=CODEC_LINK_MAX_BATCH).close()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SIGSTREAM_CACHE": str(cache)}
    ports = [free_port() for _ in range(n)]
    rxs, txs = [], []
    for i, port in enumerate(ports):
        rxs.append(subprocess.Popen(
            cli("run", "codec-rx", "--bind", f"tcp://127.0.0.1:{port}", "--output",
                 str(tmp / f"out{i}.wav"), "--codec", codec, "--backend", backend,
                 "--stream", f"link-{i}",
                 "--jitter-ms", str(jitter_ms), "--report", str(tmp / f"rx{i}.json"),
                 "--seconds", str(seconds + 300)),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for rx in rxs:  # every receiver listens before any sender starts
        assert rx.stderr is not None
        for line in rx.stderr:
            if "listening on" in line:
                break
        threading.Thread(target=rx.stderr.read, daemon=True).start()
    # Senders load (~2 s of CPU each, two cores), then all start talking together, so that
    # start-up work does not land in the measurement.
    start_at = time.time() + 5.0 + 1.5 * n
    for i, port in enumerate(ports):
        txs.append(subprocess.Popen(
            cli("run", "codec-tx", "--input", str(wav), "--connect", f"tcp://127.0.0.1:{port}",
                 "--codec", codec, "--kbps", str(kbps), "--backend", backend, "--stream",
                 f"link-{i}", "--start-at", f"{start_at:.3f}",
                 "--report", str(tmp / f"tx{i}.json")),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in rxs + txs:
        p.wait(timeout=seconds + 300)
    reports = [json.loads((tmp / f"rx{i}.json").read_text()) for i in range(n)]
    tx_reports = [json.loads((tmp / f"tx{i}.json").read_text()) for i in range(n)]
    cfg = CONFIGS[CODECS[codec].config.name]
    bound_ms = cfg.delay_ms + jitter_ms + 50.0
    p99 = [r["latency_ms"]["p99"] for r in reports if r.get("latency_ms")]
    sent = sum(t.get("packets_sent", 0) for t in tx_reports)
    played = sum(r.get("played", 0) for r in reports)
    concealed = sum(r.get("concealed", 0) for r in reports)
    late = sum(r.get("late", 0) for r in reports)
    cpu_s = sum(r.get("cpu_s_streaming", 0.0) for r in reports + tx_reports)
    return {
        "links": n, "codec": codec, "kbps": kbps, "backend": backend,
        "audio_s_per_link": round(sum(t.get("samples_captured", 0) for t in tx_reports)
                                  / n / CODEC_FS, 2),
        "packets_sent": sent, "played": played, "concealed": concealed, "late": late,
        "skipped": sum(r.get("skipped", 0) for r in reports),
        "tx_dropped": sum(t.get("packets_dropped", 0) for t in tx_reports),
        "errors": sum(sum(r.get("errors", {}).values()) for r in reports),
        "latency_p50_ms_median": round(float(np.median(
            [r["latency_ms"]["p50"] for r in reports if r.get("latency_ms")])), 2) if p99 else None,
        "latency_p99_ms_max": round(max(p99), 2) if p99 else None,
        "latency_bound_ms": bound_ms,
        "cpu_s_per_link_per_audio_s": round(cpu_s / n / max(seconds, 1e-9), 4) if cpu_s else None,
        "max_rss_mb_per_process": max(r.get("max_rss_mb", 0.0) for r in reports + tx_reports),
        "sustained": bool(p99) and len(p99) == n and concealed == 0 and late == 0
        and played == sent and max(p99) <= bound_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", default="wideband,lowdelay")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--links", default="1,10,20,30", help="link counts to try (sweep)")
    parser.add_argument("--link-codec", default="wideband")
    parser.add_argument("--kbps", type=float, default=16.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per link")
    parser.add_argument("--jitter-ms", type=float, default=40.0)
    parser.add_argument("--skip", default="", help="parts to skip: rtf,links")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    speech = _speech()
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    if "rtf" not in skip:
        if hasattr(os, "sched_setaffinity"):
            allowed = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {allowed[0]})
        result["rtf"] = bench_rtf(args.codecs.split(","), args.backend, speech)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, set(allowed))
    if "links" not in skip:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            reps = int(np.ceil(args.seconds * CODEC_FS / speech.size))
            wav = tmp / "speech.wav"
            write_audio(wav, np.tile(speech, reps)[:int(args.seconds * CODEC_FS)])
            sweep = []
            for n in (int(x) for x in args.links.split(",")):
                row = run_links(n, codec=args.link_codec, kbps=args.kbps, backend=args.backend,
                                seconds=args.seconds, jitter_ms=args.jitter_ms, wav=wav, tmp=tmp)
                print(json.dumps(row), file=sys.stderr)
                sweep.append(row)
            result["links"] = sweep
            ok = [r["links"] for r in sweep if r["sustained"]]
            result["max_links_sustained"] = max(ok) if ok else 0
            result["latency"] = next(({k: r[k] for k in ("latency_p50_ms_median",
                                                          "latency_p99_ms_max",
                                                          "latency_bound_ms")}
                                      for r in sweep if r["links"] == 1), None)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
