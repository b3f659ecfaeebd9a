"""Live fuzz of a real service: mutated messages from a raw PUSH socket, every one accounted for.

    python bench/fuzz.py --path spectral --messages 20000 --json runs/fuzz-spectral.json
    python bench/fuzz.py --path ecg --messages 20000
    python bench/fuzz.py --path codec --messages 20000     # a real codec-rx process

One :class:`~stream.service.Service` (real stage processes, real sockets on 127.0.0.1) per run.
A subscriber takes every answer; a raw PUSH socket sends ``--messages`` messages, each a valid
message of the path (real spectra; real ECG, chunk after chunk, on a few streams) put through
one mutation (:data:`MUTATIONS`: bit flips, truncations, field swaps, extreme values, wrong
kinds, oversize, NaN payloads, hostile extra keys, ...), the two killer messages of issue 10
(:func:`killers`) among them. Then it waits (by count, never by a deadline: ``--timeout`` only
ends a broken run) until the service's ledger has received every message and explained each
one, stops the service (a drain), and prints JSON:

- ``sent``, ``received`` (by ingest, summed over streams), ``answered`` (results and errors the
  subscriber got), ``results``, ``errors_by_code``, ``unexplained`` (ledger, after the drain:
  must be 0), ``mutations`` (how many of each were sent);
- ``service_running`` (still serving after the last message), ``crashed_stages`` (stages that
  died or were restarted during the run: must be empty), ``restarts``;
- ``rss_mb``: per stage, VmRSS (``/proc/<pid>/status``) after start and at the end.

A message bigger than the ingest's ZeroMQ ``MAXMSGSIZE`` is dropped by ZeroMQ with its
connection before anything is allocated: that is not a service event, and none is sent here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench.harness import rss_mb
from stream.wire import data_message, decode, encode

__all__ = ["MUTATIONS", "LiveFuzzConfig", "killers", "live_fuzz", "live_fuzz_codec", "main"]

PROBE = "fuzz-probe"
STREAMS = 8
_MAX_PAYLOAD_BYTES = 1 << 20  # the service's wire limit here: oversize costs 1 MiB, not 64
_EXTREMES: tuple[Any, ...] = (
    0, -1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1.5, float("nan"), float("inf"), -0.0,
    5e-324, 1e308, True, None, "", "x" * 8000, b"\xff" * 64, [], {}, [0, 2**63], [[1]],
    {"a": [1, {"b": None}]},
)
_FIELDS = ("v", "kind", "stream", "seq", "t_ns", "dtype", "shape", "fs")


def killers(kind: str, stream: str, payload: np.ndarray, *, fs: float | None) -> dict[
        str, list[list[bytes]]]:
    """The two messages that killed the service before issue 10, as frame lists: ``shape``
    (``[0, 2**63]`` with an empty payload) and ``seq`` (four valid messages, seq 0, 2**64-1,
    0, 2**64-1, on ``stream``)."""
    header = {"v": 1, "kind": kind, "stream": stream, "seq": 0, "t_ns": time.time_ns(),
              "dtype": "float32", "shape": [0, 2**63]}
    if fs is not None:
        header["fs"] = fs
    seqs = [encode(data_message(kind, stream, seq, payload, fs=fs))
            for seq in (0, 2**64 - 1, 0, 2**64 - 1)]
    return {"shape": [[msgpack.packb(header), b""]], "seq": seqs}


# ---------------------------------------------------------------------------------------------
# Mutations: each takes a valid message's frames and the rng, and returns frames to send


Frames = list[bytes]
Mutation = Callable[[Frames, np.random.Generator], Frames]


def _header(frames: Frames) -> dict[str, Any]:
    return dict(msgpack.unpackb(frames[0], raw=False))


def _with(frames: Frames, header: dict[str, Any], payload: bytes | None = None) -> Frames:
    try:
        raw = msgpack.packb(header, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        raw = frames[0]  # not representable: send the original header
    return [raw, frames[1] if payload is None else payload]


def _flip(data: bytes, rng: np.random.Generator, bits: int) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(bits):
        i = int(rng.integers(len(out)))
        out[i] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _cut(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(len(data) + 1))]


def _extreme(frames: Frames, rng: np.random.Generator) -> Frames:
    h = _header(frames)
    h[_FIELDS[int(rng.integers(len(_FIELDS)))]] = _EXTREMES[int(rng.integers(len(_EXTREMES)))]
    return _with(frames, h)


def _swap(frames: Frames, rng: np.random.Generator) -> Frames:
    h = _header(frames)
    a, b = rng.choice(len(_FIELDS), 2, replace=False)
    ka, kb = _FIELDS[int(a)], _FIELDS[int(b)]
    h[ka], h[kb] = h.get(kb), h.get(ka)
    return _with(frames, h)


def _delete(frames: Frames, rng: np.random.Generator) -> Frames:
    h = _header(frames)
    h.pop(_FIELDS[int(rng.integers(len(_FIELDS)))], None)
    return _with(frames, h)


def _wrong_kind(frames: Frames, rng: np.random.Generator) -> Frames:
    h = _header(frames)
    kinds = ["spectrum", "ecg", "audio", "codec", "error", "result.spectral", "video"]
    h["kind"] = kinds[int(rng.integers(len(kinds)))]
    if h["kind"] in ("error", "result.spectral"):
        h.update(dtype="msgpack", shape=[])
        return _with(frames, h, msgpack.packb({"code": "x", "reason": "y"}))
    return _with(frames, h)


def _oversize(frames: Frames, rng: np.random.Generator) -> Frames:
    h = _header(frames)
    n = _MAX_PAYLOAD_BYTES // 4 + 1 + int(rng.integers(16))
    h.update(dtype="float32", shape=[n])
    return _with(frames, h, bytes(4 * n))


def _nonfinite(frames: Frames, rng: np.random.Generator) -> Frames:
    h = _header(frames)
    x = np.frombuffer(frames[1], dtype=np.dtype(h["dtype"]).newbyteorder("<")).astype("<f4")
    x[rng.random(x.size) < 0.1] = rng.choice([np.nan, np.inf, -np.inf])
    h["dtype"] = "float32"
    return _with(frames, h, x.tobytes())


def _long_text(frames: Frames, rng: np.random.Generator) -> Frames:
    h = _header(frames)
    h[["dtype", "kind", "stream", "claim"][int(rng.integers(4))]] = "é" * int(rng.integers(200,
                                                                                           5000))
    return _with(frames, h)


def _many_keys(frames: Frames, rng: np.random.Generator) -> Frames:
    h = _header(frames)
    h.update({f"k{i}": i for i in range(int(rng.integers(60, 600)))})
    return _with(frames, h)


def _extras(frames: Frames, rng: np.random.Generator) -> Frames:
    h = _header(frames)
    key = ["claim", "explain", "embed", "gain", "epoch", "beat"][int(rng.integers(6))]
    h[key] = _EXTREMES[int(rng.integers(len(_EXTREMES)))]
    return _with(frames, h)


def _shape_lie(frames: Frames, rng: np.random.Generator) -> Frames:
    h = _header(frames)
    n = int(np.prod(h["shape"]))
    h["shape"] = [[0, 2**63], [0, 2**40, 2**40], [n, 1], [1, n], [n // 2 or 1, 2], [n + 1],
                  [2**64 - 1]][int(rng.integers(7))]
    return _with(frames, h)


MUTATIONS: dict[str, Mutation] = {
    "valid": lambda f, rng: f,
    "bitflip_header": lambda f, rng: [_flip(f[0], rng, int(rng.integers(1, 5))), f[1]],
    "bitflip_payload": lambda f, rng: [f[0], _flip(f[1], rng, int(rng.integers(1, 9)))],
    "truncate_header": lambda f, rng: [_cut(f[0], rng), f[1]],
    "truncate_payload": lambda f, rng: [f[0], _cut(f[1], rng)],
    "pad_payload": lambda f, rng: [f[0], f[1] + bytes(int(rng.integers(1, 9)))],
    "extreme_value": _extreme,
    "field_swap": _swap,
    "field_delete": _delete,
    "wrong_kind": _wrong_kind,
    "oversize": _oversize,
    "nonfinite_payload": _nonfinite,
    "long_text": _long_text,
    "many_keys": _many_keys,
    "hostile_extras": _extras,
    "shape_lie": _shape_lie,
    "frame_count": lambda f, rng: [f[0], f[1], b"x"] if rng.random() < 0.5 else [f[0]],
    "random_bytes": lambda f, rng: [rng.bytes(int(rng.integers(0, 64))),
                                    rng.bytes(int(rng.integers(0, 64)))],
}


# ---------------------------------------------------------------------------------------------
# Valid messages of each path


def _spectra(rng: np.random.Generator) -> Iterator[Frames]:
    seqs = [0] * STREAMS
    while True:
        k = int(rng.integers(STREAMS))
        n = int(rng.choice([512, 100, 1000, 2048]))
        x = rng.random(n).astype(np.float32) + np.exp(-((np.arange(n) - n / 2) / 8.0) ** 2)
        yield encode(data_message("spectrum", f"fuzz-{k}", seqs[k], x))
        seqs[k] += 1


def _ecg(rng: np.random.Generator) -> Iterator[Frames]:
    from devices import cohort_subject, simulate_record

    fs, chunk = 250.0, 62
    signals = [simulate_record(cohort_subject(k), 0, fs_hz=fs, duration_s=60.0).signal
               for k in range(STREAMS)]
    seqs, pos = [0] * STREAMS, [0] * STREAMS
    t0 = time.time_ns()
    while True:
        k = int(rng.integers(STREAMS))
        sig = signals[k]
        i = pos[k] % (sig.size - chunk)
        t_ns = t0 + round(seqs[k] * chunk * 1e9 / fs)
        yield encode(data_message("ecg", f"fuzz-{k}", seqs[k], sig[i:i + chunk], t_ns=t_ns,
                                  fs=fs))
        seqs[k] += 1
        pos[k] += chunk


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True, kw_only=True)
class LiveFuzzConfig:
    """``path``: ``spectral`` or ``ecg``; ``messages``: how many to send (killers included);
    ``weights``: engine weights (spectral: an untrained model's do); ``workdir``: for the ECG
    template store and engine cache; ``timeout_s``: ends a broken run only."""

    path: str
    messages: int
    seed: int = 0
    weights: Path | None = None
    workdir: Path | None = None
    backend: str = "eager"
    timeout_s: float = 900.0


def _messages(cfg: LiveFuzzConfig, rng: np.random.Generator) -> Iterator[tuple[str, Frames]]:
    kind = "spectrum" if cfg.path == "spectral" else "ecg"
    fs = None if kind == "spectrum" else 250.0
    payload = np.zeros(512 if kind == "spectrum" else 62, np.float32)
    for name, msgs in killers(kind, "fuzz-killer", payload, fs=fs).items():
        for frames in msgs:
            yield f"killer_{name}", frames
    valid = _spectra(rng) if kind == "spectrum" else _ecg(rng)
    names = list(MUTATIONS)
    weights = np.array([6.0 if n == "valid" else 1.0 for n in names])
    for _ in range(cfg.messages - 5):
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        yield name, MUTATIONS[name](next(valid), rng)


def live_fuzz(cfg: LiveFuzzConfig) -> dict[str, Any]:
    """Run one live fuzz (see the module docstring); returns the report."""
    from stream.paths.ecg import EcgSettings
    from stream.service import Service, ServiceConfig

    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="sigstream-fuzz-"))
    extra: dict[str, Any] = (
        {"weights": cfg.weights} if cfg.path == "spectral"
        else {"settings": EcgSettings(templates=workdir / "users.sqlite"),
              "cache_dir": workdir / "cache", "weights": None}
    )
    service = Service(ServiceConfig(
        path=cfg.path, ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
        backend=cfg.backend, max_batch=8, queue_depth=256, stats_interval_s=0.1,
        stop_timeout_s=60.0, max_payload_bytes=_MAX_PAYLOAD_BYTES, **extra,
    ))
    rng = np.random.default_rng(cfg.seed)
    ctx: zmq.Context[Any] = zmq.Context()
    push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
    for sock in (push, sub):
        sock.linger = 0
    sub.rcvhwm = 0  # keep every answer
    push.sndtimeo = 60_000  # a service that stops reading ends the run, not the test
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    t_start = time.monotonic()
    service.start()
    counts: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    results = 0
    sent = 0
    probes = 0

    def drain(timeout_ms: int = 0) -> None:
        nonlocal results
        while sub.poll(timeout_ms):
            timeout_ms = 0
            msg = decode(sub.recv_multipart(), topic=True)
            if msg.stream == PROBE:
                continue
            if msg.kind == "error":
                codes[str(msg.payload.get("code"))] += 1
            else:
                results += 1

    try:
        pids = dict(service.pids)
        rss_before = {name: rss_mb(pid) for name, pid in pids.items()}
        sub.connect(service.bound_publish)
        push.connect(service.bound_ingest)
        deadline = time.monotonic() + cfg.timeout_s
        while True:  # the subscription is live once a probe's answer comes back
            push.send_multipart([msgpack.packb({"v": 1, "stream": PROBE}), b""])
            probes += 1
            if sub.poll(200):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the subscription never became live")
        time.sleep(0.2)
        drain()
        for name, frames in _messages(cfg, rng):
            try:
                push.send_multipart(frames)
            except zmq.Again:
                break  # the service stopped reading: the report shows what was left
            sent += 1
            counts[name] += 1
            if sent % 64 == 0:
                drain()
        # Wait by count: every message received by ingest and explained by the ledger.
        summary: dict[str, Any] = {}
        while time.monotonic() < deadline:
            drain(100)
            summary = {s: v for s, v in service.summary().items() if s != PROBE}
            received = sum(v.received for v in summary.values())
            unexplained = sum(v.unexplained for v in summary.values())
            answered = results + sum(codes.values())
            if received >= sent and unexplained == 0 and (
                    cfg.path != "spectral" or answered >= sent):
                break
        running = service.running and service.failure is None
        rss_after = {name: rss_mb(pid) for name, pid in service.pids.items()}
        crashed = sorted(name for name, pid in service.pids.items() if pids.get(name) != pid)
        restarts = dict(getattr(service, "restarts", {}))
    finally:
        try:
            service.stop()
        finally:
            push.close()
            sub.close()
            ctx.term()
    summary = {s: v for s, v in service.summary().items() if s != PROBE}
    return {
        "path": cfg.path,
        "sent": sent,
        "received": sum(v.received for v in summary.values()),
        "answered": results + sum(codes.values()),
        "results": results,
        "errors_by_code": dict(sorted(codes.items())),
        "unexplained": sum(v.unexplained for v in summary.values()),
        "service_running": running,
        "crashed_stages": crashed,
        "restarts": {k: v for k, v in restarts.items() if v},
        "rss_mb": {name: {"before": rss_before.get(name), "after": rss_after.get(name)}
                   for name in sorted(set(rss_before) | set(rss_after))},
        "mutations": dict(sorted(counts.items())),
        "seconds": round(time.monotonic() - t_start, 1),
        "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
    }


# ---------------------------------------------------------------------------------------------
# The codec link: a real `sigstream run codec-rx` process


SPEECH = Path("/usr/share/sounds/alsa/Front_Center.wav")  # Debian alsa-utils


def live_fuzz_codec(cfg: LiveFuzzConfig) -> dict[str, Any]:
    """Fuzz a real ``codec-rx`` process: the packets of real speech (its valid stream, played to
    a WAV), each of ``cfg.messages`` messages either one of them or one put through a mutation,
    the killers among them, then the end marker; 5 % are valid (the receiver plays in real
    time: 20,000 messages are about a minute of audio). The receiver has no answer channel: its
    report must count every message (``messages == packets_received + end_markers +
    sum(errors)``), and it must exit 0 after playing to the end."""
    import subprocess

    from devices.audio import CODEC_FS, read_audio
    from engines.codec.codec import encode_signal, load_codec
    from stream.paths.codec.receiver import MAX_PACKET_BYTES

    def oversize(frames: Frames, rng: np.random.Generator) -> Frames:
        # Over the receiver's packet limit but under its socket's MAXMSGSIZE, which would
        # disconnect this sender (and lose what it had in flight) instead of answering.
        h = _header(frames)
        n = MAX_PACKET_BYTES + 1 + int(rng.integers(4096))
        h.update(dtype="uint8", shape=[n])
        return _with(frames, h, bytes(n))

    mutations = {**MUTATIONS, "oversize": oversize}

    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="sigstream-fuzz-"))
    rng = np.random.default_rng(cfg.seed)
    with load_codec("wideband", backend="eager") as codec:
        packets = encode_signal(read_audio(SPEECH), codec.config, codec.encoder,
                                codec.coder(kbps=16.0))
        c = codec.config
        common: dict[str, Any] = {
            "fs": float(CODEC_FS), "codec": codec.key, "model": codec.model_id,
            "step": codec.step_for(16.0), "kbps": 16.0, "frame": c.frame, "hop": c.hop}
    ctx: zmq.Context[Any] = zmq.Context()
    probe = ctx.socket(zmq.PULL)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    report_path = workdir / "rx.json"
    cmd = [sys.executable, "-m", "stream.cli", "run", "codec-rx",
           "--bind", f"tcp://127.0.0.1:{port}", "--output", str(workdir / "out.wav"),
           "--stream", "link", "--backend", "eager", "--jitter-ms", "1000",
           "--report", str(report_path)]
    t_start = time.monotonic()
    log_path = workdir / "rx.log"
    log_file = log_path.open("w")
    rx = subprocess.Popen(cmd, stderr=log_file, cwd=Path(__file__).resolve().parents[1])
    push = ctx.socket(zmq.PUSH)
    push.linger = 10_000
    push.connect(f"tcp://127.0.0.1:{port}")
    counts: Counter[str] = Counter()
    seq = 0

    def valid(*, advance: bool) -> Frames:
        # Only valid packets advance the stream: the receiver plays in real time, so the
        # mutated ones ride on the current seq rather than lengthen the audio.
        nonlocal seq
        packet = packets[seq % len(packets)]
        frames = encode(data_message("codec", "link", seq, np.frombuffer(packet, np.uint8),
                                     t_ns=time.time_ns(), **common))
        seq += advance
        return frames

    try:
        while "listening on" not in log_path.read_text():  # logged once its codec is loaded
            if rx.poll() is not None:
                raise RuntimeError(f"codec-rx exited before it listened: {log_path.read_text()}")
            time.sleep(0.1)
        killer_list = [(name, frames) for name, messages in killers(
            "codec", "link", np.frombuffer(packets[0], np.uint8), fs=float(CODEC_FS)).items()
            for frames in messages]
        names = list(mutations)
        for i in range(cfg.messages):
            if i < len(killer_list):
                name, frames = killer_list[i]
            elif rng.random() < 0.05:
                name, frames = "valid", valid(advance=True)
            else:
                name = names[int(rng.integers(len(names)))]
                frames = mutations[name](valid(advance=False), rng)
            push.send_multipart(frames)
            counts[name] += 1
            if i % 512 == 0:
                time.sleep(0.01)  # a sender at about a link's pace, not a flood
        end = data_message("codec", "link", seq, np.zeros(0, np.uint8), end=True, **common)
        push.send_multipart(encode(end))
        counts["end"] += 1
        try:
            status = rx.wait(timeout=cfg.timeout_s)
        except subprocess.TimeoutExpired:
            rx.kill()
            status = rx.wait()
    finally:
        push.close()
        ctx.term()
        if rx.poll() is None:
            rx.kill()
        log_file.close()
    sent = sum(counts.values())
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    # corrupt_packet is counted at playout, for a packet already counted as received.
    explained = (report.get("packets_received", 0) + report.get("end_markers", 0)
                 + sum(n for code, n in report.get("errors", {}).items()
                       if code != "corrupt_packet"))
    return {
        "path": "codec",
        "sent": sent,
        "received": report.get("messages", 0),
        "unexplained": report.get("messages", 0) - explained,
        "played_frames": report.get("played", 0),
        "packets_received": report.get("packets_received", 0),
        "errors_by_code": report.get("errors", {}),
        "exit_status": status,
        "service_running": status == 0,  # it ran to the end marker and exited cleanly
        "crashed_stages": [] if status == 0 else ["codec-rx"],
        "max_rss_mb": report.get("max_rss_mb"),
        "tracebacks_logged": log_path.read_text().count("Traceback"),
        "mutations": dict(sorted(counts.items())),
        "seconds": round(time.monotonic() - t_start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", choices=["spectral", "ecg", "codec"], default="spectral")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--weights", type=Path, default=None,
                        help="spectral: weights file (default: an untrained model's)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sigstream-fuzz-") as tmp:
        weights = args.weights
        if args.path == "spectral" and weights is None:
            import torch

            from engines.roi.specs import ROI_SPECS
            from stream.paths.spectral.commands import DEFAULT_MODEL

            weights = Path(tmp) / "roi_untrained.pt"
            torch.manual_seed(0)
            torch.save(ROI_SPECS[DEFAULT_MODEL].build().state_dict(), weights)
        fuzz = live_fuzz_codec if args.path == "codec" else live_fuzz
        report = fuzz(LiveFuzzConfig(
            path=args.path, messages=args.messages, seed=args.seed, weights=weights,
            workdir=Path(tmp), backend=args.backend, timeout_s=args.timeout,
        ))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    ok = (report["service_running"] and not report["crashed_stages"]
          and report["unexplained"] == 0 and report["received"] == report["sent"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
