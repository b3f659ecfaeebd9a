"""``sigstream source ecg-sim|ecg-replay``: ECG wearables (:mod:`devices.ecg`) pushed to an ECG
service by :func:`stream.sources.run_source` (exit status and summary there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devices.ecg import EcgReplay, EcgReplayConfig, EcgSimulatorConfig, EcgSimulatorSource
from stream.sources import run_source, sim_stream_ids

__all__ = ["run_ecg_replay", "run_ecg_sim"]


def run_ecg_sim(
    *,
    stream: str = "wearable",
    streams: int = 1,
    fs_hz: float = 250.0,
    chunk_ms: float = 250.0,
    subject: int = 0,
    session: int = 1,
    snr_db: float | None = None,
    seed: int = 0,
    **link: Any,
) -> int:
    """Simulate ``streams`` ECG wearables (wearable ``i``, 0-based, is cohort subject
    ``subject + i`` of cohort ``seed``, in ``session``) pushing ``chunk_ms`` chunks of
    ``fs_hz`` samples in real time. ``link``: ``connect``, ``header`` (``claim``, ``explain``,
    ``embed``) and the rest of :func:`~stream.sources.run_source`."""
    return run_source(
        "ecg-sim",
        lambda: {
            name: EcgSimulatorSource(EcgSimulatorConfig(
                subject=subject + i, session=session, fs_hz=fs_hz, chunk_ms=chunk_ms,
                seed=seed, snr_db=snr_db))
            for i, name in enumerate(sim_stream_ids(stream, streams))
        },
        kind="ecg", target_hz=streams * 1e3 / chunk_ms, **link,
    )


def run_ecg_replay(
    path: Path,
    *,
    stream: str | None = None,
    fs_hz: float | None = None,
    column: str | None = None,
    chunk_ms: float = 250.0,
    loop: bool = False,
    **link: Any,
) -> int:
    """Replay an ECG recording (CSV / NPY / WFDB, :func:`devices.ecg_files.load_ecg`) at its
    recorded rate in ``chunk_ms`` chunks as stream ``stream`` (default: the file's name)."""
    path = Path(path)
    name = stream if stream is not None else "_".join(path.stem.split()) or "ecg"
    col: int | str | None = int(column) if column is not None and column.isdigit() else column
    return run_source(
        f"ecg-replay {path.name}",
        lambda: {name: EcgReplay(EcgReplayConfig(path=path, fs_hz=fs_hz, column=col,
                                                 chunk_ms=chunk_ms, loop=loop))},
        kind="ecg", target_hz=1e3 / chunk_ms, **link,
    )
