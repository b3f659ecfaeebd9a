"""sigstream's moving parts: wire format, pipeline service, sources, sinks and the CLI.

Importing :mod:`stream` never loads torch: only engine worker processes do.
"""

import lazy_loader

# Exports load on first use (their names and modules are in __init__.pyi): a command or a stage
# loads only the modules it uses.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
