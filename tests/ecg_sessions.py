"""Simulated ECG sessions with chosen noise, shared by the simulator and front-end tests."""

from __future__ import annotations

import dataclasses

from devices import EcgSession, EcgSubject, subject_session

__all__ = ["NOISE_SOURCES", "only_noise"]

# the session's noise levels (mV); see devices.ecg_cohort.EcgSession
NOISE_SOURCES = ("baseline_mV", "electrode_drift_mV", "emg_mV", "powerline_mV", "motion_mV")


def only_noise(subject: EcgSubject, source: str | None = None, level_mV: float = 0.0,
               ) -> EcgSession:
    """Session 1 of ``subject`` with every noise source off but ``source`` (one of
    :data:`NOISE_SOURCES`), set to ``level_mV``; ``None``: no noise at all."""
    if source is not None and source not in NOISE_SOURCES:
        raise ValueError(f"unknown noise source {source!r}; choose from {NOISE_SOURCES}")
    levels = dict.fromkeys(NOISE_SOURCES, 0.0)
    if source is not None:
        levels[source] = level_mV
    return dataclasses.replace(subject_session(subject, 1), **levels)
