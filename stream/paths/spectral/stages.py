"""The spectral-peaks path: spectra in (``kind="spectrum"``), ROI and peak lists out
(``kind="result.spectral"``).

Two halves, each unit-testable on arrays without sockets:

- :class:`SpectrumStage`, the per-stream stage run by the ingest or a shard process. A
  spectrum carries no DSP state from one message to the next, so it only checks the spectrum,
  the one check of the spectral contract in the service (numpy only: the process never loads
  torch); an input that breaks it is answered to its sender with the check's code.
- :class:`SpectralWorker`, the engine half run by an engine-worker process:
  :meth:`~SpectralWorker.prepare` cuts a checked spectrum into model windows
  (:meth:`engines.roi.detector.RoiDetector.windows`), the worker batches windows of many
  spectra into one engine call, and :meth:`~SpectralWorker.finish` turns each spectrum's logits
  into its result (:meth:`~engines.roi.detector.RoiDetector.finish`).

:class:`SpectralPath` ties them together as a :class:`~stream.stages.ServedPath`; it is a frozen,
picklable description, and imports the engines only in :meth:`load_worker` (in the
worker process).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.errors import InputError
from stream.paths.spectral.commands import DEFAULT_MODEL, PEAK_FITS
from stream.wire import Message

if TYPE_CHECKING:
    from engines.roi.detector import RoiDetector

__all__ = [
    "SPECTRAL_INPUT_KIND",
    "SPECTRAL_MAX_SAMPLES",
    "SpectralPath",
    "SpectralWorker",
    "SpectrumStage",
]

SPECTRAL_INPUT_KIND = "spectrum"
SPECTRAL_MAX_SAMPLES = 1 << 20
"""Longest spectrum served (samples); the detector's own limit. Longer ones are answered
``too_long`` before they cost an engine worker anything."""


class SpectrumStage:
    """Per-stream stage of the spectral path (ingest or shard process): checks the spectrum,
    once for the whole service (:func:`~engines.roi.windowing.check_spectrum`, numpy only), and
    forwards it unchanged.

    :meth:`process` returns the message itself, which tells the stage to forward the received
    frames without re-encoding them; the engine worker trusts what arrives.
    """

    __slots__ = ("max_samples", "stream")

    def __init__(self, stream: str, *, max_samples: int = SPECTRAL_MAX_SAMPLES) -> None:
        self.stream = stream
        self.max_samples = max_samples

    def process(self, msg: Message) -> Sequence[Message]:
        """Check one spectrum. Raises :class:`InputError` (``bad_shape``, ``bad_dtype``,
        ``empty``, ``too_long``, ``input_contract`` for NaN or Inf) for a payload the engines
        cannot serve."""
        from engines.errors import InputContractError
        from engines.roi.windowing import check_spectrum

        try:
            check_spectrum(msg.payload, max_length=self.max_samples)
        except InputContractError as exc:
            raise InputError(exc.code, str(exc), stream=msg.stream, seq=msg.seq) from exc
        return (msg,)

    def flush(self) -> Sequence[Message]:
        """End of stream: nothing is held back."""
        return ()


class SpectralWorker:
    """Engine half of the spectral path (engine-worker process).

    ``engine``: any callable ``(B, 1, 512) float32 -> (B, C, 512) float32``, ROI logits
    (C = 1) or peak heads (C = 5); ``detector``: a :class:`~engines.roi.detector.RoiDetector`
    that reads them. Plans are opaque to the caller.
    """

    def __init__(self, engine: Any, detector: RoiDetector, *, row_shape: tuple[int, ...]) -> None:
        self.engine = engine
        self.detector = detector
        self.row_shape = row_shape

    def prepare(self, msg: Message) -> tuple[np.ndarray, Any]:
        """Windows ``(n, 1, 512)`` float32 for one spectrum, and the plan to finish it.

        The spectrum was checked by :class:`SpectrumStage`; it is converted to float64 once
        here (the detector reads peak heights and areas from it in its own units).
        """
        x = np.asarray(msg.payload, dtype=np.float64)
        windows, plan = self.detector.windows(x)
        return windows, (x, plan)

    def run(self, rows: np.ndarray) -> np.ndarray:
        """One engine call on rows of many spectra: ``(B, 1, 512)`` -> ``(B, C, 512)``."""
        return np.asarray(self.engine(rows))

    def finish(self, msg: Message, outputs: np.ndarray, plan: Any) -> dict[str, Any]:
        """The result body ``{"roi": [...], "peaks": [...]}`` for one spectrum."""
        from engines.errors import InputContractError

        x, window_plan = plan
        try:
            return self.detector.finish(x, outputs, window_plan)
        except InputContractError as exc:
            raise InputError("input_contract", str(exc), stream=msg.stream, seq=msg.seq) from exc

    def warm_up(self, max_batch: int) -> None:
        """Run the engine and the detector once at batch 1 and at ``max_batch``, so the first
        real spectrum does not pay for lazy initialisation."""
        rng = np.random.default_rng(0)
        spectrum = rng.random(self.row_shape[-1]).astype(np.float32)
        windows, plan = self.detector.prepare(spectrum)
        self.detector.finish(spectrum, self.run(windows), plan)
        for batch in sorted({1, max_batch}):
            self.run(np.zeros((batch, *self.row_shape), dtype=np.float32))

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True, kw_only=True)
class SpectralPath:
    """The spectral path, as the runtime needs it: kinds, stage factory, worker loader.

    ``model``: a key of :data:`engines.roi.specs.ROI_SPECS`; ``weights``: a weights file to use
    instead of the shipped one (same architecture); ``max_samples``: longest spectrum served;
    ``peak_fit``: the joint fit of a peak-head model's read-out (``"model"``: its spec's shape,
    ``"pvoigt"``, ``"hann"``, or ``"none"``).
    """

    model: str = DEFAULT_MODEL
    weights: FsPath | None = None
    max_samples: int = SPECTRAL_MAX_SAMPLES
    peak_fit: str = "model"

    name: str = dataclasses.field(default="spectral", init=False)
    input_kind: str = dataclasses.field(default=SPECTRAL_INPUT_KIND, init=False)
    time_series: bool = dataclasses.field(default=False, init=False)
    sticky_streams: bool = dataclasses.field(default=False, init=False)
    # A spectrum older than this at the door is stale for live peak detection: answered
    # ``expired`` so that what the service delivers under overload stays fresh.
    deadline_ms: int = dataclasses.field(default=50, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_samples, int) or self.max_samples < 1:
            raise ValueError(f"max_samples must be a positive integer, got {self.max_samples!r}")
        if self.peak_fit not in PEAK_FITS:
            raise ValueError(f"peak_fit must be one of {PEAK_FITS}, got {self.peak_fit!r}")

    @property
    def result_kind(self) -> str:
        return f"result.{self.name}"

    def stream_stage(self, stream: str) -> SpectrumStage:
        return SpectrumStage(stream, max_samples=self.max_samples)

    def load_worker(
        self,
        *,
        backend: str,
        max_batch: int,
        cache_dir: FsPath | None,
        threads: int | None,
    ) -> SpectralWorker:
        """Load the engine (once per worker process) and its detector, and warm both up.

        Raises whatever :func:`engines.engine.load_engine` raises (missing weights, backend
        unavailable); the worker reports it to the supervisor, which fails the start.
        """
        from engines.engine import load_engine
        from engines.roi.detector import RoiDetector, RoiDetectorConfig
        from engines.roi.specs import ROI_SPECS, detector_config

        if self.model not in ROI_SPECS:
            raise ValueError(f"unknown ROI model {self.model!r}; choose from {sorted(ROI_SPECS)}")
        spec = ROI_SPECS[self.model]
        if self.weights is not None:
            # ModelSpec resolves weights relative to the shipped folder; an absolute path wins.
            spec = dataclasses.replace(spec, weights=str(FsPath(self.weights).resolve()))
        engine = load_engine(
            spec, backend, max_batch=max_batch, cache_dir=cache_dir, threads=threads
        )
        config = detector_config(
            self.model, RoiDetectorConfig(max_length_samples=max(self.max_samples, 1)))
        if self.peak_fit != "model":
            fit = None if self.peak_fit == "none" else self.peak_fit
            config = dataclasses.replace(config, peak_fit=fit)  # type: ignore[arg-type]
        detector = RoiDetector(config)
        worker = SpectralWorker(engine, detector, row_shape=tuple(spec.input_shape))
        worker.warm_up(max_batch)
        return worker
