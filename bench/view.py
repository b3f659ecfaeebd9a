"""What a live view costs the service: ``bench.pipeline``'s spectral load, three times side by
side in one run — without a view, with ``sigstream view`` attached and a page reading it, and
with a page that stops reading — and for each the service's delivered results, p50/p99
capture-to-result latency and CPU per spectrum per stage, with ratios to the run without a
view. Prints JSON.

    python -m bench.view --streams 10 --rate 20 --seconds 30 --json runs/view.json
    python -m bench.view --rate 100 --peak-fit none        # 1,000 spectra/s

The view runs in its own process (as ``sigstream run --view-port --metrics-port`` starts it) on
the service's results, input mirror and per-stream counts (``/streams``); every variant's
service mirrors its inputs and serves its metrics, so they differ only by the view. The page is
a WebSocket client process that chooses ``inst-0`` (so the view also asks the mirror for that
instrument's spectra) and reads every update: what a browser asks of the view. The browser's own
drawing costs the viewer's machine, not the service's. The stalled page opens ``/ws`` with a
4 KiB receive buffer and never reads. The view's own CPU per spectrum is reported beside the
service's (``attached``), and so are the updates the page received and those the view skipped
for the stalled page.

``health_reads`` is what the view's once-a-second read of the service's health costs with
``--health-streams`` streams (default 1,000, an ECG gateway's wearables): ``/readyz``, which it
reads, against ``/metrics``, which it used to scrape — the supervisor's CPU to render it and
the view's to parse it, both growing with the streams.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench.harness import add_service_options, cpu_seconds, emit, spectral_run
from bench.pipeline import run_service

_VARIANTS = ("no_view", "view", "view_stalled_page")


def _page_main(url: str, seconds: float, report: Any) -> None:
    """A page: choose inst-0, read updates for ``seconds``; report how many and their bytes."""
    import asyncio

    import aiohttp

    async def read() -> tuple[int, int]:
        updates = size = 0
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}ws") as ws:
            await ws.send_str(json.dumps({"choose": "inst-0"}))
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                with contextlib.suppress(asyncio.TimeoutError):
                    message = await ws.receive(timeout=1.0)
                    if message.type == aiohttp.WSMsgType.TEXT:
                        updates += 1
                        size += len(message.data)
        return updates, size

    updates, size = asyncio.run(read())
    report.send({"updates": updates, "mean_update_kb": round(size / max(updates, 1) / 1024, 1)})


def stalled_page(url: str, choose: str | None = None) -> socket.socket:
    """A page that opens the view's ``/ws`` (and chooses the stream ``choose``), then never
    reads: a raw socket with a 4 KiB receive buffer, so the view's sends back up."""
    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(b"sigstream-bench!").decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    if choose is not None:  # one masked text frame (RFC 6455), as a browser sends it
        text = json.dumps({"choose": choose}).encode()
        mask = b"\x01\x02\x03\x04"
        sock.sendall(bytes([0x81, 0x80 | len(text)]) + mask
                     + bytes(b ^ mask[i % 4] for i, b in enumerate(text)))
    return sock


@contextlib.contextmanager
def _view(service: Any, mp: Any, *, page: str, seconds: float) -> Iterator[dict[str, Any]]:
    """The view beside ``service`` and a page on it (``"reading"`` or ``"stalled"``)."""
    from stream.view.process import ViewProcess
    from stream.view.server import ViewConfig

    out: dict[str, Any] = {}
    view = ViewProcess(ViewConfig(connect=service.bound_publish,
                                  mirror=service.stages["ingest"]["mirror"],
                                  metrics=f"http://127.0.0.1:{service.metrics_port}", port=0))
    url = view.start()
    here, there = mp.Pipe(duplex=False)
    stalled = None
    if page == "reading":
        reader = mp.Process(target=_page_main, args=(url, seconds + 5, there), daemon=True)
        reader.start()
    else:
        stalled = stalled_page(url, choose="inst-0")
    try:
        pid = view.pid
        assert pid is not None
        cpu0 = cpu_seconds(pid)
        yield out
        out["view_cpu_s"] = round(cpu_seconds(pid) - cpu0, 3)
        with urllib.request.urlopen(f"{url}api/state", timeout=10) as response:
            counts = json.loads(response.read())["view"]
        out["view_counts"] = counts
        if page == "reading" and here.poll(seconds + 15):
            out["page"] = here.recv()
    finally:
        if stalled is not None:
            stalled.close()
        view.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0,
                        help="spectra/s per stream (default: a load the default model and its "
                             "fit hold on 2 cores)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--drain", type=float, default=10.0)
    parser.add_argument("--model", default="peaks_mixed")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--peak-fit", default="model")
    add_service_options(parser, workers=2, workers_help="engine workers")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--queue-policy", default="drop-oldest")
    parser.add_argument("--health-streams", type=int, default=1000)
    args = parser.parse_args(argv)

    with spectral_run(args, prefix="bench-view-") as run:
        result = run.result
        result["config"] = {"streams": args.streams, "rate_hz": args.rate,
                            "seconds": args.seconds, "model": args.model,
                            "peak_fit": args.peak_fit, "workers": args.workers,
                            **run.machine_at_start()}
        result["health_reads"] = _health_reads(args.health_streams)
        for variant in _VARIANTS:
            attach = None
            if variant != "no_view":
                page = "reading" if variant == "view" else "stalled"

                def attach(service: Any, page: str = page) -> Any:
                    return _view(service, run.mp, page=page, seconds=args.seconds)

            out = run_service(args, run.weights, run.mp, attach=attach, mirror=True,
                              metrics=True)
            view = out.get("attached", {})
            received = max(1, out["service_accounting"]["received"])
            if "view_cpu_s" in view:
                view["view_cpu_ms_per_spectrum"] = round(1e3 * view["view_cpu_s"] / received, 3)
            result[variant] = out
        base = result["no_view"]
        result["ratios_over_no_view"] = {
            variant: {
                "p99": _ratio(result[variant]["latency_ms"]["p99"], base["latency_ms"]["p99"]),
                "service_cpu_per_spectrum": _ratio(result[variant]["cpu_ms_per_message"]["total"],
                                                   base["cpu_ms_per_message"]["total"]),
                "delivered": _ratio(result[variant]["delivered"], base["delivered"]),
            }
            for variant in _VARIANTS[1:]
        }
    emit(result, args.json)
    return 0


def _health_reads(streams: int, reads: int = 3) -> dict[str, Any]:
    """CPU milliseconds of one health read with ``streams`` streams seen by every stage."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from stream.metrics import MetricsCollector, StageStats

    stages = ("ingest", "worker-0", "worker-1", "publisher")
    collector = MetricsCollector()
    for stage in stages:
        stats = StageStats(stage)
        for i in range(streams):
            stats.frame_in(f"w-{i}")
            stats.frame_out(f"w-{i}")
            stats.observe_latency(f"w-{i}", 0.01)
        collector.update(stats.snapshot())
    registry = CollectorRegistry()
    registry.register(collector)
    readiness = {"ready": True, "state": "running", "stages": dict.fromkeys(stages, "ready"),
                 "queues": {stage: {"depth": 0, "capacity": 1024} for stage in stages[:3]}}

    def cpu_ms(work: Any) -> float:
        t0 = time.process_time()
        for _ in range(reads):
            work()
        return round((time.process_time() - t0) / reads * 1e3, 3)

    text = generate_latest(registry).decode()
    return {
        "streams": streams,
        "metrics_bytes": len(text),
        "metrics_render_ms": cpu_ms(lambda: generate_latest(registry)),
        "metrics_parse_ms": cpu_ms(lambda: [f.samples for f in
                                            text_string_to_metric_families(text)]),
        "readyz_bytes": len(json.dumps(readiness)),
        "readyz_ms": cpu_ms(lambda: json.loads(json.dumps(readiness))),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


if __name__ == "__main__":
    sys.exit(main())
