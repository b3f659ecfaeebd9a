"""The fixed protocol of the ECG evaluation: who is enrolled and tested on which sessions and
rates, the R-peak conditions, the targets, and how much signal each section simulates."""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = [
    "CLOSED_SET_SUBJECTS",
    "DEFAULT_SEED",
    "DETECTION_FS_HZ",
    "DETECTION_MUSCLE_SNR_DB",
    "DETECTION_SESSION",
    "DETECTION_SNR_DB",
    "END_GUARD_S",
    "ENROL_BEATS",
    "ENROL_SESSION",
    "FAR_POINTS",
    "FRONTEND_MAX_FS_HZ",
    "FUSE_BEATS",
    "IMPOSTOR_SUBJECTS",
    "OPEN_SET_SUBJECTS",
    "OPEN_SET_TEST_SESSION",
    "PAPER_FIGURES",
    "SECTIONS",
    "TARGETS",
    "TEST_SESSIONS",
    "TOLERANCE_S",
    "EvalSizes",
    "log_progress",
]

DEFAULT_SEED = 0
CLOSED_SET_SUBJECTS = tuple(range(18))
OPEN_SET_SUBJECTS = tuple(range(1000, 1050))
IMPOSTOR_SUBJECTS = tuple(range(2000, 2050))
ENROL_SESSION = 0
TEST_SESSIONS = (1, 2)
OPEN_SET_TEST_SESSION = 1
DETECTION_SESSION = 1
DETECTION_FS_HZ = (128.0, 250.0, 360.0, 500.0, 1000.0)
DETECTION_SNR_DB: tuple[float | None, ...] = (None, 30.0, 20.0, 15.0, 10.0)
DETECTION_MUSCLE_SNR_DB = (30.0, 20.0, 15.0, 10.0, 5.0, 0.0)
ENROL_BEATS = 20
FUSE_BEATS = 5
TOLERANCE_S = 0.05
END_GUARD_S = 0.5
FRONTEND_MAX_FS_HZ = 2000.0  # engines.ecg.frontend accepts 100..2000 Hz
FAR_POINTS = (0.01, 0.001)
SECTIONS = ("closed_set", "verification", "open_set", "r_peaks", "real_recordings")

#: The paper's closed-set figures (PAPERS.md §3), fractions.
PAPER_FIGURES = {"accuracy": 0.932, "precision": 0.929, "recall": 0.931, "f1": 0.929}

TARGETS = {
    "closed_set_accuracy_min": 0.99,
    "seen_eer_single_max": 0.02,
    "seen_eer_fused_max": 0.005,
    "open_set_eer_ratio_max": 1.5,
    "impostor_identification_accept_max": 0.001,
    "r_peak_sensitivity_min": 0.995,
    "r_peak_ppv_min": 0.995,
}


@dataclass(frozen=True, kw_only=True)
class EvalSizes:
    """How much signal each section simulates (seconds per subject and session).

    ``test_fs_hz``: stream rates of the test records of the identity sections; a session's
    ``test_s`` seconds are split evenly over them (the training data's rates,
    :data:`engines.ecg.data.TRAIN_FS_HZ`; beats are resampled to 256 Hz whatever the rate).
    ``enrol_fs_hz``, ``enrol_s``: the session-0 record the first :data:`ENROL_BEATS` good
    beats are enrolled from (one wearable; long enough for noisy subjects to reach 20).
    ``n_open_set`` / ``n_impostors``: the first that many of subjects 1000.. / 2000..
    ``detection_subjects``: cohort subjects simulated for the R-peak section, ``detection_s``
    seconds each per rate and noise level.
    """

    test_fs_hz: tuple[float, ...] = (128.0, 250.0, 360.0, 500.0)
    enrol_fs_hz: float = 250.0
    enrol_s: float = 120.0
    test_s: float = 120.0
    n_open_set: int = len(OPEN_SET_SUBJECTS)
    n_impostors: int = len(IMPOSTOR_SUBJECTS)
    detection_subjects: tuple[int, ...] = CLOSED_SET_SUBJECTS
    detection_s: float = 60.0

    @staticmethod
    def quick() -> EvalSizes:
        """Sizes of the smoke test: seconds instead of minutes, a handful of subjects."""
        return EvalSizes(
            test_fs_hz=(128.0, 500.0),
            enrol_s=60.0,
            test_s=16.0,
            n_open_set=6,
            n_impostors=6,
            detection_subjects=(0, 1),
            detection_s=12.0,
        )


def log_progress(enabled: bool, msg: str) -> None:
    """One progress line on stderr (the table goes to stdout), when ``enabled``."""
    if enabled:
        print(f"[eval ecg] {msg}", file=sys.stderr, flush=True)
