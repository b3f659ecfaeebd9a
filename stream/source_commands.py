"""The ``sigstream source`` commands: each builds its instruments (:mod:`devices`) and pushes
their frames with :func:`stream.sources.push_frames`, then prints a one-line summary and returns
the exit status (0 done, 1 gave up on a missing or stuck service, 2 bad file or arguments, 130
interrupted).

Called from the CLI's main thread; Ctrl-C (SIGINT) or SIGTERM stops a run cleanly.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import zmq

from devices.ecg import EcgReplay, EcgReplayConfig, EcgSimulatorConfig, EcgSimulatorSource
from devices.frames import DeviceError
from devices.spectrometer import (
    SpectrometerSimConfig,
    SpectrometerSimulator,
    SpectrumReplay,
    SpectrumReplayConfig,
)
from stream.errors import WireError
from stream.sources import DEFAULT_BUFFER_BYTES, PushReport, push_frames, sim_stream_ids

__all__ = [
    "run_ecg_replay",
    "run_ecg_sim",
    "run_replay",
    "run_spectral_sim",
]


def _print_run(
    label: str, report: PushReport, target_hz: float | None, out: TextIO | None
) -> int:
    out = out or sys.stdout
    print(report.summary(label, target_hz), file=out, flush=True)
    if report.error:
        print(f"sigstream source: error: {report.error}", file=sys.stderr, flush=True)
        return 1
    return 130 if report.interrupted else 0


def run_spectral_sim(
    *,
    connect: str,
    rate_hz: float = 100.0,
    stream: str = "sim-1",
    streams: int = 1,
    count: int | None = None,
    seconds: float | None = None,
    length: int = 512,
    seed: int = 0,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    give_up_s: float | None = None,
    context: zmq.Context | None = None,
    out: TextIO | None = None,
) -> int:
    """Simulate ``streams`` instruments at ``rate_hz`` spectra/s each and push them to
    ``connect``; stop after ``count`` spectra per stream and/or ``seconds``, or on Ctrl-C.

    Instrument ``i`` (0-based) is seeded ``[seed, i]``. ``buffer_bytes``/``give_up_s``: see
    :func:`push_frames`. Prints a one-line summary; returns the exit status (0 done, 1 gave up
    on a missing or stuck service, 2 bad arguments, 130 interrupted).
    """
    try:
        names = sim_stream_ids(stream, streams)
        sources = {
            name: SpectrometerSimulator(
                SpectrometerSimConfig(
                    rate_hz=rate_hz, length=length, seed=seed, instrument=i, count=count
                )
            )
            for i, name in enumerate(names)
        }
        report = push_frames(
            sources, kind="spectrum", connect=connect, seconds=seconds,
            buffer_bytes=buffer_bytes, give_up_s=give_up_s, context=context,
        )
    except (ValueError, WireError, zmq.ZMQError) as exc:
        print(f"sigstream source: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return _print_run("spectral-sim", report, rate_hz * len(names), out)


def run_replay(
    path: Path,
    *,
    connect: str,
    rate_hz: float = 10.0,
    stream: str | None = None,
    count: int | None = None,
    loop: bool = False,
    skip_rows: int = 0,
    seconds: float | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    give_up_s: float | None = None,
    context: zmq.Context | None = None,
    out: TextIO | None = None,
) -> int:
    """Replay ``path`` (CSV or NPY, one spectrum per row) at ``rate_hz`` to ``connect`` as
    stream ``stream`` (default: the file's name without suffix, spaces as ``_``).

    Stops at the end of the file (or after ``count`` spectra, ``seconds``, or Ctrl-C); with
    ``loop`` it starts again at the first row. Prints a one-line summary; returns the exit
    status (0 done, 1 gave up on a missing or stuck service, 2 bad file or arguments, 130
    interrupted).
    """
    path = Path(path)
    name = stream if stream is not None else "_".join(path.stem.split()) or "replay"
    try:
        source = SpectrumReplay(
            SpectrumReplayConfig(
                path=path, rate_hz=rate_hz, count=count, loop=loop, skip_rows=skip_rows
            )
        )
        report = push_frames(
            {name: source}, kind="spectrum", connect=connect, seconds=seconds,
            buffer_bytes=buffer_bytes, give_up_s=give_up_s, context=context,
        )
    except (OSError, DeviceError, ValueError, zmq.ZMQError) as exc:
        print(f"sigstream source: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return _print_run(f"replay {path.name}", report, rate_hz, out)


def run_ecg_sim(
    *,
    connect: str,
    stream: str = "wearable",
    streams: int = 1,
    fs_hz: float = 250.0,
    chunk_ms: float = 250.0,
    seconds: float | None = None,
    subject: int = 0,
    session: int = 1,
    snr_db: float | None = None,
    seed: int = 0,
    header: Mapping[str, Any] | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    give_up_s: float | None = None,
    context: zmq.Context | None = None,
    out: TextIO | None = None,
) -> int:
    """Simulate ``streams`` ECG wearables (wearable ``i``, 0-based, is cohort subject
    ``subject + i`` of cohort ``seed``, in ``session``) and push ``chunk_ms`` chunks of
    ``fs_hz`` samples to ``connect`` in real time, with the extra ``header`` keys (``claim``,
    ``explain``, ``embed``); stop after ``seconds`` or on Ctrl-C. Prints a one-line summary;
    returns the exit status (0 done, 1 gave up on a missing or stuck service, 2 bad arguments,
    130 interrupted)."""
    try:
        names = sim_stream_ids(stream, streams)
        sources = {
            name: EcgSimulatorSource(EcgSimulatorConfig(
                subject=subject + i, session=session, fs_hz=fs_hz, chunk_ms=chunk_ms,
                seed=seed, snr_db=snr_db,
            ))
            for i, name in enumerate(names)
        }
        report = push_frames(
            sources, kind="ecg", connect=connect, header=header, seconds=seconds,
            buffer_bytes=buffer_bytes, give_up_s=give_up_s, context=context,
        )
    except (ValueError, WireError, zmq.ZMQError) as exc:
        print(f"sigstream source: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return _print_run("ecg-sim", report, len(names) * 1e3 / chunk_ms, out)


def run_ecg_replay(
    path: Path,
    *,
    connect: str,
    stream: str | None = None,
    fs_hz: float | None = None,
    column: str | None = None,
    chunk_ms: float = 250.0,
    loop: bool = False,
    seconds: float | None = None,
    header: Mapping[str, Any] | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    give_up_s: float | None = None,
    context: zmq.Context | None = None,
    out: TextIO | None = None,
) -> int:
    """Replay an ECG recording (CSV / NPY / WFDB, see :func:`devices.ecg_files.load_ecg`) at its
    recorded rate in ``chunk_ms`` chunks to ``connect`` as stream ``stream`` (default: the
    file's name). Exit status as :func:`run_replay`."""
    path = Path(path)
    name = stream if stream is not None else "_".join(path.stem.split()) or "ecg"
    col: int | str | None = int(column) if column is not None and column.isdigit() else column
    try:
        source = EcgReplay(EcgReplayConfig(path=path, fs_hz=fs_hz, column=col,
                                           chunk_ms=chunk_ms, loop=loop))
        report = push_frames(
            {name: source}, kind="ecg", connect=connect, header=header, seconds=seconds,
            buffer_bytes=buffer_bytes, give_up_s=give_up_s, context=context,
        )
    except (OSError, DeviceError, ValueError, zmq.ZMQError) as exc:
        print(f"sigstream source: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return _print_run(f"ecg-replay {path.name}", report, 1e3 / chunk_ms, out)
