"""The public API of each package, pinned (as httpx's ``tests/test_exported_members.py`` does).

A package's ``__init__`` re-exports its public names and lists them in ``__all__``: everything
it exposes is listed, everything listed resolves, and the list is the one pinned here, so that
a change to the public API is a change to this file too. A few shared modules that cannot be
re-exported by their package are pinned as modules (``engines.training`` loads torch, which
importing :mod:`engines` must not).
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

TOP_LEVEL = ("stream", "engines", "devices")

# engines.ecg re-exports its front end's names beside its own.
_ECG_FRONTEND = [
    "BEAT_FS_HZ", "BEAT_POST_S", "BEAT_PRE_S", "BEAT_SAMPLES", "Beat", "BeatFrontend",
    "FrontendConfig", "FrontendOutput", "QUALITY_OK", "QualityBlock", "detect_r_peaks",
    "extract_beats",
]

PACKAGES: dict[str, list[str]] = {
    "stream": [
        "InputError", "Message", "ResultsClient", "Service", "ServiceConfig", "ServiceError",
        "SigstreamError", "StageError", "WireError", "WireLimits", "data_message", "decode",
        "encode", "error_message", "serve",
    ],
    "stream.stages": [
        "BatchClock", "DROP_CODES", "DispatchConfig", "END", "IngestConfig", "PathWorker",
        "PublisherConfig", "ServedPath", "ShardConfig", "StageConfig", "StageWiring",
        "StreamStage", "WorkerConfig", "shard_of", "stage_main",
    ],
    "stream.paths": [
        "CliGroups", "Environment", "PLUGIN_GROUP", "PathSettings", "PathSpec", "ServeOptions",
        "ViewSpec", "path_spec", "path_specs", "served_paths",
    ],
    "stream.paths.spectral": ["SPEC"],
    "stream.paths.ecg": ["EcgSettings", "SPEC"],
    "stream.paths.codec": ["SPEC"],
    "stream.paths.ct": ["SPEC"],
    "stream.paths.pet": ["SPEC"],
    "engines": [
        "AccuracyGateError", "BackendUnavailableError", "BatcherConfig", "DynamicBatcher",
        "Engine", "EngineCache", "EngineError", "InputContractError", "ModelSpec",
        "WeightsError", "WeightsMismatchError", "WeightsNotFoundError", "load_engine",
        "resolve_backend",
    ],
    "engines.backends": [],
    "engines.ct": ["CT_SPECS", "CtDenoiser", "SERVED_MODEL", "denoise_volume"],
    "engines.pet": ["PET_SPECS", "PetDenoiser", "SERVED_MODEL", "denoise_volume"],
    "engines.ct.evaluate": [
        "DOSES", "EvalSizes", "TARGETS", "ct_gate", "ct_report", "evaluate_ct", "format_table",
        "task_metric",
    ],
    "engines.ecg": sorted([
        *_ECG_FRONTEND, "FusionState", "MatchResult", "Matcher", "TemplateStore",
        "TemplateStoreError", "UserRecord", "fuse",
    ]),
    "engines.ecg.evaluate": [
        "CLOSED_SET_SUBJECTS", "DEFAULT_SEED", "DETECTION_FS_HZ", "DETECTION_NOISE",
        "DETECTION_SNR_DB", "EvalSizes", "IMPOSTOR_SUBJECTS", "OPEN_SET_SUBJECTS",
        "PAPER_FIGURES", "SECTIONS", "TARGETS", "ecg_report", "format_table",
        "task_metric",
    ],
    "engines.ecg.frontend": _ECG_FRONTEND,
    "engines.roi.evaluate": [
        "DEFAULT_SEED", "MODEL_NAMES", "format_table", "ood_groups",
        "roi_report", "task_metric",
    ],
    "devices.volumes": [
        "DicomLayout", "NiftiLayout", "RescaleMode", "Volume", "VolumeError", "VolumeFailure",
        "VolumeSource", "WriteSummary", "find_inputs", "output_location", "output_locations",
        "read_dicom_series", "read_nifti", "read_source", "read_volumes", "write_dicom_file",
        "write_dicom_series", "write_nifti", "write_volume",
    ],
    "devices": [
        "CODEC_FS", "DeviceError", "EcgAdapter", "EcgRecord", "EcgReplay", "EcgReplayConfig",
        "EcgSession", "EcgSimulator", "EcgSimulatorConfig", "EcgSimulatorSource", "EcgSubject",
        "EcgWave", "EndOfStream", "Frame", "Microphone", "REAL_RECORDINGS", "RealRecording",
        "SoundDevice", "SourceFileError", "Speaker", "SpectrometerAdapter",
        "SpectrometerSimConfig", "SpectrometerSimulator", "SpectrumBatch", "SpectrumReplay",
        "SpectrumReplayConfig", "SpectrumSimConfig", "StreamResampler", "TextTable", "WavSink",
        "WavSource", "check_file", "cohort_subject", "find_device", "format_devices",
        "list_devices", "load_ecg", "load_npy", "load_real_recording", "open_table",
        "read_audio", "read_table", "resample", "simulate", "simulate_record",
        "subject_session", "text_lines", "write_audio",
    ],
}

MODULES: dict[str, list[str]] = {
    "devices.lifecycle": ["ClosesOnExit", "OpenCloseState"],
    "engines.training": [
        "data_rng", "deterministic_torch", "ema", "evaluating", "log_line", "optimiser_step",
        "progress_bar", "run_record", "save_weights", "write_card",
    ],
    "devices.files": [
        "EXCERPT_CHARS", "MAX_FILE_BYTES", "MAX_LINE_CHARS", "TextTable", "check_file",
        "excerpt", "is_number", "load_npy", "numeric", "open_table", "read_table", "split_row",
        "text_lines",
    ],
    "stream.paths.deferred": ["deferred_gate", "load_attribute", "specs_at_service_batch"],
    "stream.results": ["ResultsClient"],
    "stream.view.panels": [
        "CURVE_POINTS", "IMAGE_SIDE", "MAX_MARKERS", "envelope", "finite", "histogram_quantiles",
        "image", "mapping", "spans",
    ],
    "stream.view.process": ["ViewProcess", "run_view"],
    "stream.view.server": ["ViewConfig", "ViewServer"],
    "stream.view.state": ["HISTORY_S", "STALE_S", "STRIP_S", "ViewState"],
}


def _packages_with_all() -> set[str]:
    found = set()
    for top in TOP_LEVEL:
        package = importlib.import_module(top)
        names = [top] + [m.name for m in pkgutil.walk_packages(package.__path__, f"{top}.")
                         if m.ispkg]
        found |= {name for name in names if hasattr(importlib.import_module(name), "__all__")}
    return found


def _exposed(package: ModuleType) -> set[str]:
    """The public names a package's ``__init__`` offers (its submodules aside), bound or loaded
    on first use (``lazy_loader``: they are in ``dir()``)."""
    return {name for name in dir(package)
            if not name.startswith("_") and not isinstance(getattr(package, name), ModuleType)
            and type(getattr(package, name)).__module__ != "__future__"}


def test_every_package_with_all_is_pinned() -> None:
    assert _packages_with_all() == set(PACKAGES)


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_package_exports(name: str) -> None:
    package = importlib.import_module(name)
    assert sorted(package.__all__) == PACKAGES[name]
    assert len(set(package.__all__)) == len(package.__all__), "a name listed twice"
    assert _exposed(package) == set(package.__all__)
    for member in package.__all__:
        assert getattr(package, member) is not None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == MODULES[name]
    for member in module.__all__:
        assert getattr(module, member) is not None


def test_importing_the_packages_loads_neither_torch_nor_stream_from_devices() -> None:
    # A fresh interpreter: this one has long imported torch.
    code = ("import sys, devices; assert 'stream' not in sys.modules; "
            "import stream, engines; assert 'torch' not in sys.modules, 'torch loaded'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
