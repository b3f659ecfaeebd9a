"""``sigstream demo``: the spectral path end to end on this machine, for a few seconds.

What it starts, in order (and stops in reverse, also on Ctrl-C or an error):

1. the spectral :class:`~stream.service.Service` on random ``tcp://127.0.0.1`` ports;
2. a SUB socket on its results;
3. child processes (``python -m stream.cli source ...``, the same commands a user runs): the
   spectrometer simulator with a few instruments, and a replay of a real on-line fermentation
   run (chemotools' ``fermentation_spectra.csv``: 1,629 spectra x 1,047 points, 428-1833 1/cm,
   the file ``chemotools.datasets.load_fermentation_test()`` reads), exported once to
   ``<runs_dir>/fermentation_test.npy``. Without chemotools the demo says so and runs the
   simulator only;
4. with ``view_port``, the web view (``sigstream view``) on the service and its input mirror;
   its URL is printed, nothing is opened.

While they run it shows a live view, refreshed once a second: per stream, spectra/s,
results, peaks per spectrum, capture-to-result latency p50/p99, drops (seq numbers never
answered) and errors; then a final summary that also counts what each source says it sent.

Runs in the calling (main) thread. Everything it measures is measured here, from the results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from stream.paths.spectral.commands import DEFAULT_MODEL
from stream.results import ResultsClient
from stream.sources import interrupt_on_signals
from stream.wire import ERROR_KIND, Message

if TYPE_CHECKING:
    from stream.service import Service

__all__ = ["DemoStats", "StreamStats", "export_fermentation_run", "run_demo"]

FERMENTATION_FILE = "fermentation_test.npy"
FERMENTATION_SHAPE = (1629, 1047)
_LIVE_WINDOW_S = 2.0  # spectra/s and live percentiles look this far back
_CHILD_STOP_S = 5.0


# ---------------------------------------------------------------------------------------------
# The real run


def _chemotools_csv() -> Path | None:
    """The fermentation CSV inside the installed chemotools package, found without importing
    it (and so without pandas, which its loader needs)."""
    spec = importlib.util.find_spec("chemotools")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        csv = Path(root) / "datasets" / "data" / "fermentation_spectra.csv"
        if csv.is_file():
            return csv
    return None


def export_fermentation_run(runs_dir: Path) -> Path | None:
    """``<runs_dir>/fermentation_test.npy``: chemotools' on-line fermentation spectra as a
    (1629, 1047) float32 array, written once (atomically) and reused; ``None`` without
    chemotools."""
    from devices.frames import SourceFileError
    from devices.spectrometer import load_spectra

    out = runs_dir / FERMENTATION_FILE
    if out.is_file():
        try:
            if np.load(out, mmap_mode="r", allow_pickle=False).shape == FERMENTATION_SHAPE:
                return out
        except (OSError, ValueError):
            pass  # a broken export: write it again
    csv = _chemotools_csv()
    if csv is None:
        return None
    # The first row holds the wavenumbers (1/cm), the rows after it one spectrum each.
    spectra = load_spectra(csv, skip_rows=1).astype(np.float32)
    if spectra.shape != FERMENTATION_SHAPE:
        raise SourceFileError(f"{csv}: expected {FERMENTATION_SHAPE} spectra, got {spectra.shape}")
    runs_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=runs_dir, suffix=".npy", delete=False) as tmp:
        np.save(tmp, spectra)
    os.replace(tmp.name, out)
    return out


# ---------------------------------------------------------------------------------------------
# Statistics


@dataclass
class StreamStats:
    """What came back for one stream, as seen by a subscriber."""

    results: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    peaks: int = 0
    rois: int = 0
    max_seq: int = -1
    answered_seqs: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    recent: deque[tuple[float, float]] = field(default_factory=deque)  # (arrival s, latency ms)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def missing(self, sent: int | None = None) -> int:
        """seq numbers not answered: up to the highest seen, or of ``sent`` when known."""
        expected = sent if sent is not None else self.max_seq + 1
        return max(0, expected - self.answered_seqs)


@dataclass
class DemoStats:
    """Per-stream statistics of results and errors received (one subscriber thread)."""

    streams: dict[str, StreamStats] = field(default_factory=dict)
    invalid: int = 0
    started: float = field(default_factory=time.monotonic)
    first_s: float | None = None  # arrival of the first and the latest answer (monotonic s)
    last_s: float | None = None

    @property
    def active_s(self) -> float:
        """Seconds from the first answer to the latest one."""
        return 0.0 if self.first_s is None or self.last_s is None else self.last_s - self.first_s

    def add(self, msg: Message, received_ns: int, now_s: float) -> None:
        if self.first_s is None:
            self.first_s = now_s
        self.last_s = now_s
        stats = self.streams.setdefault(msg.stream, StreamStats())
        body = msg.payload if isinstance(msg.payload, dict) else {}
        seq = msg.seq
        if seq is not None:
            stats.max_seq = max(stats.max_seq, seq)
            stats.answered_seqs += 1
        if msg.kind == ERROR_KIND:
            code = str(body.get("code", "?"))
            stats.errors[code] = stats.errors.get(code, 0) + 1
            return
        stats.results += 1
        stats.peaks += len(body.get("peaks") or ())
        stats.rois += len(body.get("roi") or ())
        t_ns = msg.t_ns
        if t_ns is not None:
            latency = (received_ns - t_ns) / 1e6
            stats.latencies_ms.append(latency)
            stats.recent.append((now_s, latency))
        while stats.recent and stats.recent[0][0] < now_s - _LIVE_WINDOW_S:
            stats.recent.popleft()

    def live_rate(self, stats: StreamStats, now_s: float) -> float:
        while stats.recent and stats.recent[0][0] < now_s - _LIVE_WINDOW_S:
            stats.recent.popleft()
        window = min(_LIVE_WINDOW_S, max(now_s - self.started, 0.5))
        return len(stats.recent) / window


def _pct(values: list[float] | np.ndarray, q: float) -> str:
    return f"{np.percentile(values, q):.1f}ms" if len(values) else "-"


# ---------------------------------------------------------------------------------------------
# Child processes


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def sent(self) -> dict[str, int]:
        """Per-stream counts from the source's summary line (``name=N`` pairs)."""
        for line in self.output().splitlines():
            if " sent " in line and "; per stream: " in line:
                per_stream = line.split("; per stream: ", 1)[1]
                return {k: int(v) for k, v in re.findall(r"(\S+)=(\d+)", per_stream)}
        return {}


def _start_child(name: str, args: list[str], log_dir: Path) -> _Child:
    log = log_dir / f"{name}.log"
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with open(log, "wb") as fh:
        # A session of its own: a Ctrl-C in the terminal reaches the demo only, and the demo
        # stops its children in order.
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", *args],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
    return _Child(name, proc, log)


def _stop_child(child: _Child) -> None:
    if child.proc.poll() is not None:
        return
    child.proc.send_signal(signal.SIGTERM)  # the source prints its summary and closes
    try:
        child.proc.wait(_CHILD_STOP_S)
    except subprocess.TimeoutExpired:
        child.proc.kill()
        child.proc.wait()


# ---------------------------------------------------------------------------------------------
# Views


class _LiveView:
    """Redraws a table in place on a terminal; prints one line per refresh otherwise."""

    def __init__(self, out: TextIO, title: str, seconds: float) -> None:
        self.out = out
        self.title = title
        self.seconds = seconds
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._lines = 0

    def draw(self, stats: DemoStats, now_s: float) -> None:
        elapsed = now_s - stats.started
        rows = sorted(stats.streams.items())
        if not self.tty:
            rate = sum(stats.live_rate(s, now_s) for _, s in rows)
            lat = [x for _, s in rows for _, x in s.recent]
            results = sum(s.results for _, s in rows)
            peaks = sum(s.peaks for _, s in rows)
            print(
                f"t={elapsed:4.1f}s  {rate:6.1f} spectra/s  results={results}  peaks={peaks}  "
                f"p50={_pct(lat, 50)} p99={_pct(lat, 99)}  "
                f"drops={sum(s.missing() for _, s in rows)}  "
                f"errors={sum(s.error_count for _, s in rows) + stats.invalid}",
                file=self.out, flush=True,
            )
            return
        lines = [
            f"{self.title}   t={elapsed:4.1f}/{self.seconds:g} s   (Ctrl-C stops)",
            f"{'stream':<16}{'spectra/s':>10}{'results':>9}{'peaks/spec':>11}"
            f"{'p50':>10}{'p99':>10}{'drops':>7}{'errors':>7}",
        ]
        for name, s in rows:
            recent = [x for _, x in s.recent]
            per = s.peaks / s.results if s.results else 0.0
            lines.append(
                f"{name:<16}{stats.live_rate(s, now_s):>10.1f}{s.results:>9}{per:>11.1f}"
                f"{_pct(recent, 50):>10}{_pct(recent, 99):>10}{s.missing():>7}"
                f"{s.error_count:>7}"
            )
        if stats.invalid:
            lines.append(f"invalid messages on the results socket: {stats.invalid}")
        if self._lines:
            self.out.write(f"\x1b[{self._lines}F\x1b[J")  # back to the table's first line
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._lines = len(lines)


def _final_summary(
    out: TextIO, stats: DemoStats, children: list[_Child], elapsed_s: float
) -> bool:
    """Print the summary; ``True`` when every stream that sent got results and nothing is
    unexplained."""
    sent: dict[str, int] = {}
    for child in children:
        sent.update(child.sent())
    names = sorted(set(sent) | set(stats.streams))
    print(f"\nsummary ({elapsed_s:.1f} s in all, service start and stop included)", file=out)
    print(
        f"{'stream':<16}{'sent':>7}{'results':>9}{'errors':>8}{'lost':>6}{'peaks/spec':>11}"
        f"{'ROIs/spec':>10}{'p50':>10}{'p99':>10}{'max':>10}",
        file=out,
    )
    ok = True
    all_lat: list[float] = []
    for name in names:
        s = stats.streams.get(name, StreamStats())
        n_sent = sent.get(name)
        lost = s.missing(n_sent)
        all_lat += s.latencies_ms
        lat = s.latencies_ms
        print(
            f"{name:<16}{n_sent if n_sent is not None else '?':>7}{s.results:>9}"
            f"{s.error_count:>8}{lost:>6}"
            f"{(s.peaks / s.results if s.results else 0):>11.1f}"
            f"{(s.rois / s.results if s.results else 0):>10.1f}"
            f"{_pct(lat, 50):>10}{_pct(lat, 99):>10}"
            f"{(f'{max(lat):.1f}ms' if lat else '-'):>10}",
            file=out,
        )
        if s.errors:
            print(f"{'':<16}errors: {s.errors}", file=out)
        if n_sent and s.results == 0:
            ok = False
    total = sum(s.results for s in stats.streams.values())
    rate = (total - 1) / stats.active_s if stats.active_s > 0 else 0.0
    print(
        f"all: {total} results ({rate:.1f}/s while sources ran), "
        f"latency p50 {_pct(all_lat, 50)}, "
        f"p99 {_pct(all_lat, 99)}; invalid messages {stats.invalid}",
        file=out,
    )
    for child in children:
        status = child.proc.returncode
        if status not in (0, 130):
            ok = False
            tail = "\n    ".join(child.output().strip().splitlines()[-5:])
            print(f"source {child.name} exited with status {status}:\n    {tail}", file=out)
    if not names:
        print("no results came back", file=out)
        ok = False
    out.flush()
    return ok


# ---------------------------------------------------------------------------------------------
# The demo


def _start_view(stack: contextlib.ExitStack, service: Service, port: int) -> str:
    """The live view of ``service`` on ``port`` (a free one if it is taken), stopped with
    ``stack``; its URL."""
    from stream.view.process import ViewProcess
    from stream.view.server import ViewConfig

    config = ViewConfig(connect=service.bound_publish, mirror=service.stages["ingest"]["mirror"],
                        metrics=f"http://127.0.0.1:{service.metrics_port}", port=port)
    for candidate in dict.fromkeys((port, 0)):
        view = ViewProcess(dataclasses.replace(config, port=candidate))
        try:
            url = view.start()
        except OSError:
            continue
        stack.callback(view.stop)
        return url
    return "(could not start)"


def run_demo(
    seconds: float = 8.0,
    backend: str = "auto",
    cache_dir: Path | None = None,
    *,
    runs_dir: Path | None = None,
    model: str = DEFAULT_MODEL,
    weights: Path | None = None,
    instruments: int = 3,
    sim_rate_hz: float = 20.0,
    replay_rate_hz: float = 20.0,
    refresh_s: float = 1.0,
    drain_s: float = 3.0,
    view_port: int | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the spectral path locally for ``seconds`` and print a live view and a summary.

    ``backend``/``model``/``weights``: the engine (``weights``: a state-dict file instead of
    the shipped weights of ``model``). ``cache_dir``: the engine cache (``runs_dir`` defaults
    to its sibling ``runs``: ``~/.cache/sigstream/runs`` by default). ``instruments`` simulated
    spectrometers at ``sim_rate_hz`` spectra/s each, plus the fermentation replay at
    ``replay_rate_hz``. ``drain_s``: how long to wait for answers after the sources end.
    ``view_port``: serve the live web view (``sigstream view``) there on 127.0.0.1, or on a
    free port if it is taken (``None``: no view); its URL is printed, nothing is opened.

    Returns 0 when every stream got results and every source ended cleanly, 1 otherwise,
    130 on Ctrl-C.
    """
    from stream.service import Service, ServiceConfig

    out = out or sys.stdout
    if cache_dir is None:
        cache_dir = Path.home() / ".cache" / "sigstream" / "engines"
    runs_dir = runs_dir if runs_dir is not None else Path(cache_dir).parent / "runs"

    replay_file = export_fermentation_run(runs_dir)
    if replay_file is None:
        print(
            "chemotools is not installed (pip install 'sigstream[data]'): no real run to "
            "replay, simulated instruments only",
            file=out, flush=True,
        )

    stats = DemoStats()
    service: Service | None = None
    children: list[_Child] = []
    status = 0
    started = time.monotonic()
    # The children's logs outlive them: the summary reads what each source says it sent.
    with tempfile.TemporaryDirectory(prefix="sigdemo-") as logs, contextlib.ExitStack() as stack:
        try:
            stack.enter_context(interrupt_on_signals())  # SIGTERM stops the demo like Ctrl-C
            config = ServiceConfig(
                path="spectral",
                ingest="tcp://127.0.0.1:*",
                publish="tcp://127.0.0.1:*",
                backend=backend,
                model=model,
                weights=weights,
                cache_dir=Path(cache_dir),
                mirror=None if view_port is None else "tcp://127.0.0.1:*",
                metrics_port=None if view_port is None else 0,  # the view's health and counts
            )
            print(f"starting the spectral service (model {model}, backend {backend}) ...",
                  file=out, flush=True)
            service = Service(config)
            stack.callback(service.close)  # drains: every accepted spectrum is answered
            service.start()
            ingest, publish = service.bound_ingest, service.bound_publish
            view = "" if view_port is None else "  live view " + _start_view(
                stack, service, view_port)
            print(f"service: ingest {ingest}  publish {publish}{view}", file=out, flush=True)

            # settle_s: the subscription reaches the publisher before data flows
            results = stack.enter_context(ResultsClient(publish, settle_s=0.2))
            # On the way out, after the sources stop: drain the service (it answers everything
            # it accepted) while we still listen, and count those answers too.
            stack.callback(_receive_pending, results, stats)
            stack.callback(service.close)

            log_dir = Path(logs)
            sim_args = [
                "source", "spectral-sim", "--connect", ingest, "--rate", f"{sim_rate_hz:g}",
                "--stream", "inst", "--streams", str(instruments), "--seconds", f"{seconds:g}",
            ]
            children.append(_start_child("spectral-sim", sim_args, log_dir))
            stack.callback(_stop_child, children[-1])
            if replay_file is not None:
                replay_args = [
                    "source", "replay", str(replay_file), "--connect", ingest,
                    "--rate", f"{replay_rate_hz:g}", "--stream", "fermentation",
                    "--count", str(max(1, math.floor(replay_rate_hz * seconds))),
                ]
                children.append(_start_child("replay", replay_args, log_dir))
                stack.callback(_stop_child, children[-1])

            title = f"sigstream demo — spectral peaks ({model}, backend {backend})"
            _watch(results, stats, children, _LiveView(out, title, seconds), seconds=seconds,
                   refresh_s=refresh_s, drain_s=drain_s)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping", file=out, flush=True)
            status = 130
        finally:
            # Reverse order of start: stop the sources, drain the service while still
            # listening, close the socket, restore the signal handlers.
            stack.close()
        ok = _final_summary(out, stats, children, time.monotonic() - started)
        if service is not None and service.summary():
            print("the service's own account (per stream):", file=out)
            for line in service.summary_lines():
                print(f"  {line}", file=out)
            out.flush()
    return status or (0 if ok else 1)


def _receive_pending(results: ResultsClient, stats: DemoStats, quiet_s: float = 0.3) -> None:
    """Take what is still arriving until ``quiet_s`` seconds pass without a message."""
    while _receive(results, stats, quiet_s):
        pass


def _receive(results: ResultsClient, stats: DemoStats, timeout_s: float) -> bool:
    """Count what arrives within ``timeout_s`` seconds (a burst); ``False`` if nothing did."""
    invalid = results.invalid
    got = results.receive(timeout_s)
    for msg, received_ns in got:
        stats.add(msg, received_ns, time.monotonic())
    stats.invalid = results.invalid
    return bool(got) or results.invalid > invalid


def _watch(
    results: ResultsClient,
    stats: DemoStats,
    children: list[_Child],
    view: _LiveView,
    *,
    seconds: float,
    refresh_s: float,
    drain_s: float,
) -> None:
    """Receive and show results until the sources are done and the answers drained."""
    stats.started = time.monotonic()
    next_draw = stats.started + refresh_s
    hard_stop = stats.started + seconds + 10.0 + drain_s  # sources that never end are stopped
    sources_done_at: float | None = None
    while True:
        now = time.monotonic()
        if sources_done_at is None and all(c.proc.poll() is not None for c in children):
            sources_done_at = now
        if sources_done_at is not None:
            sent = sum(sum(c.sent().values()) for c in children)
            answered = sum(s.answered_seqs for s in stats.streams.values())
            if answered >= sent or now - sources_done_at > drain_s:
                break
        if now > hard_stop:
            break
        _receive(results, stats, max(0.001, next_draw - now))
        now = time.monotonic()
        if now >= next_draw:
            view.draw(stats, now)
            next_draw = now + refresh_s
    view.draw(stats, time.monotonic())
