"""Talking to the world: instrument sources and simulators, audio files and sound devices.
Never imports torch or stream."""

from devices.audio import CODEC_FS, WavSink, WavSource, read_audio, resample, write_audio
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
from devices.sound import (
    Microphone,
    SoundDevice,
    Speaker,
    StreamResampler,
    find_device,
    format_devices,
    list_devices,
)
from devices.spectra_sim import SpectrumBatch, SpectrumSimConfig, simulate
from devices.spectrometer import (
    SpectrometerAdapter,
    SpectrometerSimConfig,
    SpectrometerSimulator,
    SpectrumReplay,
    SpectrumReplayConfig,
)

__all__ = [
    "CODEC_FS",
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
    "Microphone",
    "RealRecording",
    "SoundDevice",
    "SourceFileError",
    "Speaker",
    "SpectrometerAdapter",
    "SpectrometerSimConfig",
    "SpectrometerSimulator",
    "SpectrumBatch",
    "SpectrumReplay",
    "SpectrumReplayConfig",
    "SpectrumSimConfig",
    "StreamResampler",
    "WavSink",
    "WavSource",
    "cohort_subject",
    "find_device",
    "format_devices",
    "list_devices",
    "load_ecg",
    "load_real_recording",
    "read_audio",
    "resample",
    "simulate",
    "simulate_record",
    "subject_session",
    "write_audio",
]
