"""``sigstream source spectral-sim|replay``: spectrometers (:mod:`devices.spectrometer`) pushed
to a spectral service by :func:`stream.sources.run_source` (exit status and summary there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devices.spectrometer import (
    SpectrometerSimConfig,
    SpectrometerSimulator,
    SpectrumReplay,
    SpectrumReplayConfig,
)
from stream.sources import run_source, sim_stream_ids

__all__ = ["SPECTRUM_KIND", "run_replay", "run_spectral_sim"]

SPECTRUM_KIND = "spectrum"


def run_spectral_sim(
    *,
    rate_hz: float = 100.0,
    stream: str = "sim-1",
    streams: int = 1,
    count: int | None = None,
    length: int = 512,
    seed: int = 0,
    **link: Any,
) -> int:
    """Simulate ``streams`` instruments at ``rate_hz`` spectra/s each (instrument ``i``,
    0-based, is seeded ``[seed, i]``) until ``count`` spectra per stream, ``seconds`` or
    Ctrl-C. ``link``: ``connect`` and the rest of :func:`~stream.sources.run_source`."""
    return run_source(
        "spectral-sim",
        lambda: {
            name: SpectrometerSimulator(SpectrometerSimConfig(
                rate_hz=rate_hz, length=length, seed=seed, instrument=i, count=count))
            for i, name in enumerate(sim_stream_ids(stream, streams))
        },
        kind=SPECTRUM_KIND, target_hz=rate_hz * streams, **link,
    )


def run_replay(
    path: Path,
    *,
    rate_hz: float = 10.0,
    stream: str | None = None,
    count: int | None = None,
    loop: bool = False,
    skip_rows: int = 0,
    **link: Any,
) -> int:
    """Replay ``path`` (CSV or NPY, one spectrum per row) at ``rate_hz`` as stream ``stream``
    (default: the file's name without suffix, spaces as ``_``), to its end (``loop``: again from
    the first row), ``count`` spectra, ``seconds`` or Ctrl-C."""
    path = Path(path)
    name = stream if stream is not None else "_".join(path.stem.split()) or "replay"
    return run_source(
        f"replay {path.name}",
        lambda: {name: SpectrumReplay(SpectrumReplayConfig(
            path=path, rate_hz=rate_hz, count=count, loop=loop, skip_rows=skip_rows))},
        kind=SPECTRUM_KIND, target_hz=rate_hz, **link,
    )
