"""The ECG user-recognition path: chunks of one ECG lead in (``kind="ecg"``), a decision per
beat out (``kind="result.ecg"``), served by the embedding model of :mod:`engines.ecg`
against the enrolled users' templates (PAPERS.md §3).

:mod:`~stream.paths.ecg.stages` holds what the service runs, :mod:`.sources` the wearables,
:mod:`.tools` the user commands, :mod:`.commands` its command line and settings; :data:`SPEC`
declares it.
"""

from __future__ import annotations

from stream.paths.ecg.commands import EcgSettings
from stream.paths.ecg.spec import SPEC

__all__ = ["EcgSettings", "SPEC"]
