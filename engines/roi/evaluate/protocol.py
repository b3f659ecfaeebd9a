"""The fixed protocol of the ROI evaluation: seeds and streams, sizes of a chunk, the targets,
the out-of-distribution groups, and the spectra sets simulated from them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from devices.spectra_sim import SpectrumSimConfig, simulate

__all__ = [
    "BASELINE_NAMES",
    "CHUNK_SPECTRA",
    "DEFAULT_SEED",
    "MODEL_NAMES",
    "PAPER_PEAK_MODEL",
    "SERVED_MODEL",
    "STREAM_TAGS",
    "TARGETS",
    "TOLERANCE_SAMPLES",
    "WINDOWING_LENGTHS",
    "EvalData",
    "log_progress",
    "ood_groups",
    "simulate_spectra",
    "stream_rng",
]

DEFAULT_SEED = 20_260_001  # = engines.roi.train.ROI_TEST_SEED: the held-out test stream
MODEL_NAMES = ("cnn", "resnet", "unet", "resnet_unet", "peaks", "peaks_mixed")
#: The peak-head model the service runs, and the one trained on the paper's protocol alone.
SERVED_MODEL = "peaks_mixed"
PAPER_PEAK_MODEL = "peaks"
BASELINE_NAMES = ("arpls_find_peaks", "find_peaks_fit", "find_peaks_cwt")
STREAM_TAGS = {"test": 3, "validation": 10, "peak_free": 11, "ood": 12, "windowing": 13}
CHUNK_SPECTRA = 1000
TOLERANCE_SAMPLES = 2.0
TARGETS = {
    "resnet_unet_roi_loss_max": 0.0032,  # the paper's table
    "peak_f1_min": 0.93,  # paper protocol, overall
    "peak_f1_stretch": 0.95,
    "low_snr_f1_margin_over_best_baseline": 0.05,
    "false_peaks_per_peak_free_spectrum_max": 0.01,
    "ood_peak_f1_min": 0.90,  # the served model on the out-of-distribution set
}
WINDOWING_LENGTHS = (256, 384, 1024, 2048, 4096)


def ood_groups() -> list[tuple[str, SpectrumSimConfig]]:
    """Named out-of-distribution simulator settings; each departs from the paper's protocol.

    Single factors first (shape with widths 3-61, widths alone, length, overlap, spikes), then
    three combinations of all of them.
    """
    wide = (3, 61)
    spikes = (1, 5)
    groups: list[tuple[str, SpectrumSimConfig]] = [
        ("gauss_w3-61", SpectrumSimConfig(shape="gauss", width=wide)),
        ("lorentz_w3-61", SpectrumSimConfig(shape="lorentz", width=wide)),
        ("voigt_w3-61", SpectrumSimConfig(shape="voigt", width=wide)),
        ("hann_w3-61", SpectrumSimConfig(width=wide)),
    ]
    groups += [(f"length_{n}", SpectrumSimConfig(length=n)) for n in WINDOWING_LENGTHS]
    groups += [
        ("overlap_forced", SpectrumSimConfig(overlap="force")),
        ("spikes_1-5", SpectrumSimConfig(spikes=spikes)),
    ]
    combined = [
        SpectrumSimConfig(shape="gauss", length=256, width=wide, overlap="force", spikes=spikes),
        SpectrumSimConfig(shape="lorentz", length=1024, width=wide, overlap="force", spikes=spikes),
        SpectrumSimConfig(shape="voigt", length=4096, width=wide, overlap="force", spikes=spikes),
    ]
    groups += [(f"combined_{c.shape}_L{c.length}", c) for c in combined]
    return groups


@dataclass
class EvalData:
    """Spectra of one evaluation set (lists, as lengths may differ)."""

    spectra: list[np.ndarray]
    roi: list[np.ndarray]
    peaks: list[np.ndarray]
    snr_db: np.ndarray
    group: np.ndarray

    def __len__(self) -> int:
        return len(self.spectra)

    def take(self, idx: np.ndarray) -> EvalData:
        return EvalData(
            spectra=[self.spectra[i] for i in idx],
            roi=[self.roi[i] for i in idx],
            peaks=[self.peaks[i] for i in idx],
            snr_db=self.snr_db[idx],
            group=self.group[idx],
        )

    @staticmethod
    def unlabelled(spectra: Sequence[np.ndarray]) -> EvalData:
        """Spectra without truth (real ones): empty ROI and peak lists, SNR NaN."""
        n = len(spectra)
        return EvalData(
            spectra=[np.asarray(x, dtype=np.float64) for x in spectra],
            roi=[np.zeros(np.size(x), bool) for x in spectra],
            peaks=[np.zeros(0) for _ in spectra],
            snr_db=np.full(n, np.nan),
            group=np.full(n, "real", dtype=object),
        )

    @staticmethod
    def concat(parts: Sequence[EvalData]) -> EvalData:
        return EvalData(
            spectra=[x for p in parts for x in p.spectra],
            roi=[x for p in parts for x in p.roi],
            peaks=[x for p in parts for x in p.peaks],
            snr_db=np.concatenate([p.snr_db for p in parts]),
            group=np.concatenate([p.group for p in parts]),
        )


def stream_rng(seed: int, purpose: str) -> np.random.Generator:
    """The generator of one purpose's data stream (a key of :data:`STREAM_TAGS`)."""
    return np.random.default_rng(np.random.SeedSequence([seed, STREAM_TAGS[purpose]]))


def simulate_spectra(
    n: int, config: SpectrumSimConfig, rng: np.random.Generator, group: str
) -> EvalData:
    """``n`` spectra in chunks of 1,000 from one generator (prefix-stable in ``n``)."""
    parts = []
    done = 0
    while done < n:
        k = min(CHUNK_SPECTRA, n - done)
        b = simulate(k, config=config, rng=rng)
        parts.append(
            EvalData(
                spectra=list(b.spectra),
                roi=list(b.roi),
                peaks=list(b.peaks),
                snr_db=np.asarray(b.snr_db, dtype=np.float64),
                group=np.full(k, group, dtype=object),
            )
        )
        done += k
    if not parts:
        return EvalData([], [], [], np.zeros(0), np.zeros(0, object))
    return EvalData.concat(parts)


def log_progress(enabled: bool, msg: str) -> None:
    """One progress line on stderr (the table goes to stdout), when ``enabled``."""
    if enabled:
        print(f"[eval roi] {msg}", file=sys.stderr, flush=True)
