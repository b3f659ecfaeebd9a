"""Talking to the world: instrument sources and simulators. Never imports torch or stream."""

from devices.ecg import (
    REAL_RECORDINGS,
    EcgAdapter,
    EcgReplay,
    EcgReplayConfig,
    EcgSimulatorConfig,
    EcgSimulatorSource,
    RealRecording,
    load_ecg,
    load_real_recording,
)
from devices.ecg_sim import (
    EcgRecord,
    EcgSession,
    EcgSimulator,
    EcgSubject,
    EcgWave,
    cohort_subject,
    simulate_record,
    subject_session,
)
from devices.frames import DeviceError, EndOfStream, Frame, SourceFileError
from devices.spectra_sim import SpectrumBatch, SpectrumSimConfig, simulate
from devices.spectrometer import (
    SpectrometerAdapter,
    SpectrometerSimConfig,
    SpectrometerSimulator,
    SpectrumReplay,
    SpectrumReplayConfig,
)

__all__ = [
    "REAL_RECORDINGS",
    "DeviceError",
    "EcgAdapter",
    "EcgRecord",
    "EcgReplay",
    "EcgReplayConfig",
    "EcgSession",
    "EcgSimulator",
    "EcgSimulatorConfig",
    "EcgSimulatorSource",
    "EcgSubject",
    "EcgWave",
    "EndOfStream",
    "Frame",
    "RealRecording",
    "SourceFileError",
    "SpectrometerAdapter",
    "SpectrometerSimConfig",
    "SpectrometerSimulator",
    "SpectrumBatch",
    "SpectrumReplay",
    "SpectrumReplayConfig",
    "SpectrumSimConfig",
    "cohort_subject",
    "load_ecg",
    "load_real_recording",
    "simulate",
    "simulate_record",
    "subject_session",
]
