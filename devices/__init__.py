"""Talking to the world: instrument sources and simulators. Never imports torch or stream."""

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
    "DeviceError",
    "EndOfStream",
    "Frame",
    "SourceFileError",
    "SpectrometerAdapter",
    "SpectrometerSimConfig",
    "SpectrometerSimulator",
    "SpectrumBatch",
    "SpectrumReplay",
    "SpectrumReplayConfig",
    "SpectrumSimConfig",
    "simulate",
]
