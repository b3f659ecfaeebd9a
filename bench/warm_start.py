"""Lean processes: what each process of a service and of a codec link loads and holds, on a cold
start (empty engine cache: build, gate against eager) and on a warm one (the cache entry that
passed its gate). Targets: no torch in any process of a warm start; peak RSS per worker
<= 200 MB, per codec link end <= 150 MB. Prints JSON (about two minutes).

    python -m bench.warm_start
    python -m bench.warm_start --paths spectral --json runs/warm_start.json

Per start: ``ready_s`` (start to every stage ready) and per process ``torch`` (libtorch mapped
into it) and ``peak_rss_mb`` (``VmHWM``, read while it runs). Services: ``sigstream run
<path>`` through :class:`stream.service.Service` on ``--backend`` with ``--workers`` engine
workers, shipped weights, an ECG template store in a temporary folder. Codec link: ``sigstream
run codec-tx`` (a 16 kHz WAV of real speech, in real time) to ``sigstream run codec-rx`` (a
WAV), two processes; RSS from their reports. The cache is a fresh temporary folder unless
``--cache`` names one (then the first start may already be warm).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench.harness import cli, emit, free_port, peak_mb
from bench.machine import machine_info

SPEECH = Path("/usr/share/sounds/alsa/Front_Center.wav")


def _torch_mapped(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "libtorch" in maps.read()


def service_start(path: str, *, backend: str, workers: int, cache: Path,
                  data: Path) -> dict[str, Any]:
    from stream.paths.ecg.commands import EcgSettings
    from stream.service import Service, ServiceConfig

    settings = EcgSettings(templates=data / "templates.db") if path == "ecg" else None
    config = ServiceConfig(path=path, ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
                           backend=backend, workers=workers, cache_dir=cache, settings=settings,
                           metrics_port=None)
    t0 = time.perf_counter()
    with Service(config) as service:
        ready_s = time.perf_counter() - t0
        processes = {name: {"torch": _torch_mapped(pid), "peak_rss_mb": peak_mb(pid)}
                     for name, pid in sorted(service.pids.items())}
    return {"ready_s": round(ready_s, 2), "processes": processes}


def link_start(*, backend: str, cache: Path, folder: Path) -> dict[str, Any]:
    from devices.audio import read_audio, write_audio

    speech = folder / "speech_16k.wav"
    if not speech.exists():
        write_audio(speech, read_audio(SPEECH))  # 16 kHz: the link's own rate, no resampling
    env = {**os.environ, "SIGSTREAM_CACHE": str(cache)}
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    rx = subprocess.Popen(cli("run", "codec-rx", "--bind", endpoint, "--output",
                              str(folder / "out.wav"), "--seconds", "20", "--backend", backend,
                              "--report", str(folder / "rx.json")), **quiet)
    tx = subprocess.Popen(cli("run", "codec-tx", "--input", str(speech), "--connect", endpoint,
                              "--backend", backend, "--report", str(folder / "tx.json")),
                          **quiet)
    torch_in = {"codec-rx": False, "codec-tx": False}

    def watch() -> None:  # torch is looked for while the ends stream
        while tx.poll() is None:
            for name, proc in (("codec-rx", rx), ("codec-tx", tx)):
                try:
                    torch_in[name] |= _torch_mapped(proc.pid)
                except OSError:
                    pass
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    tx.wait(timeout=120)
    rx.wait(timeout=120)
    watcher.join()
    reports = {name: json.loads((folder / f"{name[-2:]}.json").read_text())
               for name in ("codec-rx", "codec-tx")}
    return {"processes": {name: {"torch": torch_in[name],
                                 "peak_rss_mb": reports[name]["max_rss_mb"]}
                          for name in reports},
            "sent": reports["codec-tx"].get("packets_sent"),
            # every frame sent, accounted for at the receiver (a cold start builds while it runs)
            **{key: reports["codec-rx"].get(key, 0)
               for key in ("packets_received", "played", "concealed", "late", "skipped")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default="spectral,ecg,codec",
                        help="comma-separated: spectral, ecg (services), codec (a link)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=None, help="engine cache (default: new)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"machine": machine_info(), "backend": args.backend}
    with tempfile.TemporaryDirectory(prefix="sigstream-warm-") as tmp:
        folder = Path(tmp)
        cache = args.cache or folder / "engines"
        for path in args.paths.split(","):
            out[path] = {}
            for start in ("cold", "warm"):
                if path == "codec":
                    out[path][start] = link_start(backend=args.backend, cache=cache,
                                                  folder=folder)
                else:
                    out[path][start] = service_start(path, backend=args.backend,
                                                     workers=args.workers, cache=cache,
                                                     data=folder)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
