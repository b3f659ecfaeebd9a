"""Talking to the world: instrument sources and simulators, audio files and sound devices.
Never imports torch or stream."""

import lazy_loader

# Exports load on first use (their names and modules are in __init__.pyi): a process that
# needs one device does not import every device's dependencies.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
