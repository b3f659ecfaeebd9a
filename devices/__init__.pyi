# The names `devices` exports; `__init__.py` loads each from its module on first use.
from .audio import CODEC_FS, WavSink, WavSource, read_audio, resample, write_audio
from .ecg import (
    EcgAdapter,
    EcgReplay,
    EcgReplayConfig,
    EcgSimulatorConfig,
    EcgSimulatorSource,
)
from .ecg_cohort import EcgSession, EcgSubject, EcgWave, cohort_subject, subject_session
from .ecg_files import load_ecg
from .ecg_recordings import REAL_RECORDINGS, RealRecording, load_real_recording
from .ecg_sim import EcgRecord, EcgSimulator, simulate_record
from .files import TextTable, check_file, load_npy, open_table, read_table, text_lines
from .frames import DeviceError, EndOfStream, Frame, SourceFileError
from .microphone import Microphone
from .sound import SoundDevice, StreamResampler, find_device, format_devices, list_devices
from .speaker import Speaker
from .spectra_sim import SpectrumBatch, SpectrumSimConfig, simulate
from .spectrometer import (
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
    "TextTable",
    "WavSink",
    "WavSource",
    "check_file",
    "cohort_subject",
    "find_device",
    "format_devices",
    "list_devices",
    "load_ecg",
    "load_npy",
    "load_real_recording",
    "open_table",
    "read_audio",
    "read_table",
    "resample",
    "simulate",
    "simulate_record",
    "subject_session",
    "text_lines",
    "write_audio",
]
