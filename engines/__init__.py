"""Turning arrays into answers: model specs, backends, the engine cache and the batcher.

Importing :mod:`engines` does not load torch; building or loading a model does.
"""

import lazy_loader

# Exports load on first use (their names and modules are in __init__.pyi): a process that serves one
# model loads only what serving it needs.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
