"""ECG user recognition: streaming beat front end (numpy/scipy), beat models and matching.

Importing :mod:`engines.ecg` does not load torch; the model, training and evaluation modules
import it themselves.
"""

from engines.ecg import frontend as _frontend
from engines.ecg.frontend import *  # noqa: F403 - the front end's names, listed in its __all__
from engines.ecg.matcher import FusionState, Matcher, MatchResult, fuse
from engines.ecg.templates import TemplateStore, TemplateStoreError, UserRecord

__all__ = [
    *_frontend.__all__,
    "FusionState",
    "MatchResult",
    "Matcher",
    "TemplateStore",
    "TemplateStoreError",
    "UserRecord",
    "fuse",
]
