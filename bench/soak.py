"""Soak benchmark: the spectral service at its nominal load for minutes, with a worker killed
every minute, a subscriber that never reads and 1 % malformed messages. Prints JSON.

    python bench/soak.py                      # 10 minutes
    python bench/soak.py --quick              # 1 minute, a worker killed every 20 s
    python bench/soak.py --minutes 30 --json runs/soak.json

- A **load** process plays ``--streams`` instruments at ``--rate`` spectra/s each (512-sample
  spectra from :func:`devices.spectra_sim.simulate`, on a fixed schedule); every
  ``1 / --malformed`` th message is malformed instead (payload of the wrong length, a dtype the
  service refuses, a NaN, a missing field, in turn), keeping its stream and ``seq``, so that it
  too must be answered, with an error.
- Every ``--kill-every-s`` seconds a worker (``worker-0``, ``worker-1``, ... in turn) gets
  ``SIGKILL``; the supervisor restarts it and answers what it held ``worker_lost``.
- A **slow subscriber** connects and never reads.
- This process subscribes to everything and accounts for every ``seq`` sent: delivered, or an
  error answered (by code), or unexplained (never answered within ``--drain`` s after the
  load ended; must be 0). Every ``--sample-s`` it records each process's resident memory
  (``VmRSS`` from ``/proc/<pid>/status``) and CPU time (``utime + stime`` from
  ``/proc/<pid>/stat``, summed over the incarnations of a restarted stage).

The JSON has the totals, the errors by code, the restarts and kills, the service's own
accounting, capture-to-result latency of what was delivered, RSS per process over time (MB)
with its peak, last value and growth within one incarnation, and CPU ms per message per stage.
The service runs in this process, so ``bench`` is the supervisor and the subscribers together.
If the shipped weights are missing, an untrained model of the same architecture is used.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench.harness import PacedLoad, cpu_seconds, emit, service_accounting, spectral_run

_POOL = 256  # distinct simulated spectra, cycled
_MALFORMED_KINDS = ("payload_length", "bad_dtype", "nan", "missing_field")


# ---------------------------------------------------------------------------------------------
# Load process


def _malformed(kind: str, stream: str, seq: int, spectrum: np.ndarray, t_ns: int) -> list[bytes]:
    """A message the service must refuse with an error, with a readable stream and seq."""
    from stream.wire import data_message, encode

    if kind == "nan":
        bad = spectrum.copy()
        bad[7] = np.nan
        return encode(data_message("spectrum", stream, seq, bad, t_ns=t_ns))
    header: dict[str, Any] = {"v": 1, "kind": "spectrum", "stream": stream, "seq": seq,
                              "t_ns": t_ns, "dtype": "float32", "shape": [len(spectrum)]}
    payload = np.asarray(spectrum, "<f4").tobytes()
    if kind == "payload_length":
        payload = payload[:-4]
    elif kind == "bad_dtype":
        header["dtype"] = "complex64"
    else:
        del header["dtype"]
    return [msgpack.packb(header), payload]


def load_main(*, endpoint: str, streams: int, rate_hz: float, seconds: float,
              malformed_every: int, seed: int, start_ns: int, report: Any) -> None:
    """Send ``rate_hz * seconds`` messages per stream on a fixed schedule from ``start_ns``
    (Unix ns), every ``malformed_every``-th malformed; then send ``{"sent", "malformed",
    "max_lag_ms"}`` on ``report`` (a pipe end)."""
    from devices.spectra_sim import SpectrumSimConfig, simulate
    from stream.wire import data_message, encode

    pool = simulate(_POOL, config=SpectrumSimConfig(), rng=np.random.default_rng(seed)).spectra
    ids = [f"inst-{i}" for i in range(streams)]
    malformed: dict[str, int] = {}
    with PacedLoad(endpoint=endpoint, ids=ids, rate_hz=rate_hz, seconds=seconds,
                   start_ns=start_ns, report=report) as load:
        load.extra["malformed"] = malformed
        for k, i, now in load.schedule:
            k_total = k * streams + i + 1  # messages sent, this one included
            spectrum = pool[(k_total - 1) % _POOL]
            if malformed_every and k_total % malformed_every == 0:
                kind = _MALFORMED_KINDS[(k_total // malformed_every) % len(_MALFORMED_KINDS)]
                malformed[kind] = malformed.get(kind, 0) + 1
                load.push.send_multipart(_malformed(kind, ids[i], k, spectrum, now))
            else:
                load.push.send_multipart(encode(data_message("spectrum", ids[i], k, spectrum,
                                                             t_ns=now)))


# ---------------------------------------------------------------------------------------------
# Process readings


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process, MB (``VmRSS``); ``None`` once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class _Readings:
    """RSS samples over time, and CPU seconds per stage summed over its incarnations."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.samples: list[dict[str, Any]] = []
        self._cpu: dict[int, tuple[str, float]] = {}  # pid -> (stage, last CPU s seen)
        self._rss: dict[int, tuple[str, list[float]]] = {}  # pid -> (stage, its samples)

    def cpu(self, pids: dict[str, int]) -> None:
        for name, pid in pids.items():
            seconds = cpu_seconds(pid)
            if seconds or pid not in self._cpu:
                self._cpu[pid] = (name, seconds)

    def sample(self, pids: dict[str, int]) -> None:
        self.cpu(pids)
        rss: dict[str, float] = {}
        for name, pid in [*pids.items(), ("bench", os.getpid())]:
            mb = rss_mb(pid)
            if mb is not None:
                rss[name] = round(mb, 1)
                self._rss.setdefault(pid, (name, []))[1].append(mb)
        self.samples.append({"t_s": round(time.monotonic() - self.t0, 1), "rss_mb": rss})

    def cpu_per_stage(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, seconds in self._cpu.values():
            out[name] = out.get(name, 0.0) + seconds
        return out

    def rss_summary(self) -> dict[str, dict[str, float]]:
        """Per process (MB): the peak over all its incarnations, the last sample, and the
        largest growth within one incarnation (from its second sample, once it is surely
        loaded, to its last)."""
        out: dict[str, dict[str, float]] = {}
        for name, values in self._rss.values():
            entry = out.setdefault(name, {"peak": 0.0, "last": 0.0, "growth": 0.0,
                                          "incarnations": 0})
            entry["peak"] = round(max(entry["peak"], *values), 1)
            entry["last"] = round(values[-1], 1)
            entry["incarnations"] += 1
            if len(values) >= 3:
                entry["growth"] = round(max(entry["growth"], values[-1] - values[1]), 1)
        return out


# ---------------------------------------------------------------------------------------------
# The run


def run_soak(args: argparse.Namespace, weights: Path | None, mp: Any) -> dict[str, Any]:
    from stream.service import Service, ServiceConfig
    from stream.wire import ERROR_KIND, decode

    seconds = args.minutes * 60.0
    config = ServiceConfig(
        path="spectral", ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
        backend=args.backend, model=args.model, weights=weights, workers=args.workers,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )
    with Service(config) as service:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.rcvhwm = 0  # the measuring end must not lose anything itself
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(service.bound_publish)
        slow = ctx.socket(zmq.SUB)  # connects, subscribes to everything, never reads
        slow.rcvhwm = 1
        slow.setsockopt(zmq.RCVBUF, 4096)
        slow.linger = 0
        slow.setsockopt(zmq.SUBSCRIBE, b"")
        slow.connect(service.bound_publish)
        time.sleep(0.5)  # the subscriptions must reach the publisher before data flows
        report, child_end = mp.Pipe(duplex=False)
        load = mp.Process(
            target=load_main, name="soak-load",
            kwargs={"endpoint": service.bound_ingest, "streams": args.streams,
                    "rate_hz": args.rate, "seconds": seconds,
                    "malformed_every": round(1 / args.malformed) if args.malformed else 0,
                    "seed": 1, "start_ns": time.time_ns() + 500_000_000,
                    "report": child_end},
        )
        load.start()
        child_end.close()
        t0 = time.monotonic()
        readings = _Readings(t0)
        readings.sample(service.pids)
        kills: list[dict[str, Any]] = []
        answers: dict[str, dict[int, str]] = {}
        latencies: list[float] = []
        duplicates = 0
        src: dict[str, Any] | None = None
        deadline: float | None = None
        next_sample, next_kill = t0 + args.sample_s, t0 + args.kill_every_s
        try:
            while True:
                now = time.monotonic()
                if src is None and report.poll():
                    src = report.recv()
                    deadline = now + args.drain
                if src is not None:
                    done = all(len(answers.get(s, {})) >= n for s, n in src["sent"].items())
                    if done or now > (deadline or 0):
                        break
                elif not load.is_alive() and not report.poll():
                    raise RuntimeError(f"the load process died (exit code {load.exitcode})")
                if now >= next_sample:
                    next_sample += args.sample_s
                    readings.sample(service.pids)
                if src is None and now >= next_kill:
                    next_kill += args.kill_every_s
                    stage = f"worker-{len(kills) % args.workers}"
                    pid = service.pids[stage]
                    readings.cpu(service.pids)  # its CPU so far: gone with it
                    os.kill(pid, signal.SIGKILL)
                    kills.append({"t_s": round(now - t0, 1), "stage": stage, "pid": pid})
                if not sub.poll(100):
                    continue
                while True:
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = decode(frames, topic=True)
                    if msg.seq is None:
                        continue  # an error about an unreadable message: not one of ours
                    if msg.kind == ERROR_KIND:
                        outcome = str(msg.payload.get("code"))
                    else:
                        outcome = "delivered"
                        latencies.append((time.time_ns() - int(msg.header["t_ns"])) / 1e6)
                    per = answers.setdefault(msg.stream, {})
                    if msg.seq in per:
                        duplicates += 1
                    per[msg.seq] = outcome
            readings.sample(service.pids)
            elapsed = time.monotonic() - t0
            restarts = service.restarts
        finally:
            load.join(10)
            if load.is_alive():
                load.kill()
                load.join()
            sub.close()
            slow.close()
            ctx.term()
        service.stop()
        summary = service.summary()
        failure = service.failure
    assert src is not None
    outcomes: dict[str, int] = {}
    for per in answers.values():
        for outcome in per.values():
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    sent = sum(src["sent"].values())
    answered = sum(min(len(answers.get(s, {})), n) for s, n in src["sent"].items())
    account = service_accounting(summary)
    received = account["received"]
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    cpu = readings.cpu_per_stage()
    return {
        "elapsed_s": round(elapsed, 1),
        "sent": sent,
        "malformed_sent": src["malformed"],
        "delivered": outcomes.pop("delivered", 0),
        "errors": dict(sorted(outcomes.items())),
        "unexplained": sent - answered,
        "duplicates": duplicates,
        "kills": kills,
        "restarts": restarts,
        "service_failure": None if failure is None else str(failure),
        "service_accounting": account,
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 3),
            "p99": round(float(np.percentile(lat, 99)), 3),
            "max": round(float(lat.max()), 3),
        },
        "load_max_lag_ms": round(src["max_lag_ms"], 3),
        "rss_mb": {"per_process": readings.rss_summary(), "samples": readings.samples},
        "cpu_ms_per_message": {
            **{name: round(1e3 * c / max(1, received), 3) for name, c in sorted(cpu.items())},
            "total": round(1e3 * sum(cpu.values()) / max(1, received), 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true",
                        help="1 minute, a worker killed every 20 s")
    parser.add_argument("--streams", type=int, default=10, help="instruments")
    parser.add_argument("--rate", type=float, default=20.0, help="spectra/s per instrument")
    parser.add_argument("--kill-every-s", type=float, default=60.0,
                        help="SIGKILL a worker this often")
    parser.add_argument("--malformed", type=float, default=0.01,
                        help="fraction of malformed messages")
    parser.add_argument("--sample-s", type=float, default=10.0,
                        help="how often RSS and CPU are read")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="s to wait for answers after the load ends")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model", default="resnet_unet")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.kill_every_s, args.sample_s = 1.0, 20.0, 5.0
    if not 0 <= args.malformed <= 0.5:
        parser.error("--malformed must be between 0 and 0.5")

    with spectral_run(args, prefix="bench-soak-") as run:
        result = run.result
        result["config"] = {
            "minutes": args.minutes, "streams": args.streams, "rate_hz": args.rate,
            "offered_per_s": args.streams * args.rate, "kill_every_s": args.kill_every_s,
            "malformed": args.malformed, "model": args.model, "weights": run.weights_note,
            "backend": args.backend, "workers": args.workers, **run.machine_at_start(),
        }
        result["soak"] = run_soak(args, run.weights, run.mp)
    emit(result, args.json)
    return 0 if result["soak"]["unexplained"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
