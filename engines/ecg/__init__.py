"""ECG user recognition: streaming beat front end (numpy/scipy), beat models and matching.

Importing :mod:`engines.ecg` does not load torch; the model, training and evaluation modules
import it themselves.
"""

from engines.ecg.frontend import (
    BEAT_FS_HZ,
    BEAT_POST_S,
    BEAT_PRE_S,
    BEAT_SAMPLES,
    QUALITY_OK,
    Beat,
    BeatFrontend,
    FrontendConfig,
    FrontendOutput,
    QualityBlock,
    detect_r_peaks,
    extract_beats,
)
from engines.ecg.matcher import FusionState, Matcher, MatchResult, fuse
from engines.ecg.templates import TemplateStore, TemplateStoreError, UserRecord

__all__ = [
    "BEAT_FS_HZ",
    "BEAT_POST_S",
    "BEAT_PRE_S",
    "BEAT_SAMPLES",
    "QUALITY_OK",
    "Beat",
    "BeatFrontend",
    "FrontendConfig",
    "FrontendOutput",
    "FusionState",
    "MatchResult",
    "Matcher",
    "QualityBlock",
    "TemplateStore",
    "TemplateStoreError",
    "UserRecord",
    "detect_r_peaks",
    "extract_beats",
    "fuse",
]
