"""The codec path: the autoencoder audio codec of :mod:`engines.codec` (PAPERS.md §4), as a
live link between two processes (``run codec-tx`` captures, encodes and sends; ``run
codec-rx`` receives, conceals, decodes and plays) and as offline coding of files. It has its
own runners, not the service.

:mod:`~stream.paths.codec.sender`, :mod:`.receiver` and :mod:`.link` are the two link ends and
what they share, :mod:`.tools` offline coding, :mod:`.commands` the command line; :data:`SPEC`
declares it.
"""

from __future__ import annotations

from stream.paths.codec.spec import SPEC

__all__ = ["SPEC"]
