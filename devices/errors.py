"""The one error hierarchy of sigstream: its root, and the errors of :mod:`devices`.

Every error sigstream raises on purpose derives from :class:`SigstreamError`, so a caller (the
CLI, a test, an embedding application) can catch the project's errors in one clause; each also
inherits the builtin a caller would catch without knowing sigstream (msgpack's
``FormatError(ValueError, ...)``), shown in brackets::

    SigstreamError                        devices.errors: a refusal the user can act on
    ├── ConfigError (ValueError)          devices.errors: a setting a component refuses before
    │                                     any work (unknown name, value out of range)
    ├── DeviceError (RuntimeError)        devices.errors: a source, sink or sound device that
    │   │                                 cannot open or deliver
    │   └── SourceFileError (ValueError)  a replay or audio file that is corrupt, ragged, empty
    ├── VolumeError (ValueError)          devices.errors: a CT/PET volume (DICOM series, NIfTI)
    │                                     or slice that cannot be read, simulated or written
    ├── EngineError                       engines.errors: turning arrays into answers
    │   ├── WeightsError                  weights that cannot be used (raised as such only when
    │   │   │                             the file exists but cannot be read: permissions)
    │   │   ├── WeightsNotFoundError (FileNotFoundError)
    │   │   │                             no weights or card where expected: train them
    │   │   └── WeightsMismatchError (ValueError)
    │   │                                 weights that exist but do not fit: corrupt file, wrong
    │   │                                 model, shapes or card
    │   ├── InputContractError (ValueError)      an array that breaks a model's input contract
    │   ├── BackendUnavailableError (RuntimeError)  a backend whose library or device is absent
    │   ├── AccuracyGateError (RuntimeError)     a compiled engine that disagrees with eager
    │   ├── TemplateStoreError            engines.ecg.templates: template store or its key
    │   ├── BitstreamError (ValueError)   engines.codec.bitstream: bytes that are not a frame
    │   ├── ContainerError (ValueError)   engines.codec.container: not an intact .sgc file
    │   └── NemaError (ValueError)        engines.pet.nema_locate: no NEMA IQ phantom found
    ├── MessageError (ValueError)         stream.errors: a message answered with an `error`
    │   │                                 result (carries `code`, `stream`, `seq`)
    │   ├── WireError                     it breaks wire format v1
    │   └── InputError                    well-formed, but breaks the path's input contract
    ├── SecurityError (ValueError)        stream.errors: keys missing, unreadable or too open;
    │                                     an endpoint exposed without keys
    ├── StageError (RuntimeError)         stream.errors: a pipeline stage failed or died
    ├── ServiceError (RuntimeError)       stream.errors: a service that cannot start
    └── QueueClosed (RuntimeError)        stream.queues: a put after close (a producer's bug)

Signals, not errors (plain ``Exception``, never a :class:`SigstreamError`, so no ``except
SigstreamError`` swallows the end of a stream): ``devices.frames.EndOfStream``,
``stream.queues.EndOfQueue``, ``QueueFull``, ``QueueEmpty`` (trio's ``EndOfChannel`` and
``WouldBlock``).

Left as builtins on purpose: a file that is missing or cannot be written raises the
``OSError`` that ``open()`` would (with ``errno`` and ``filename``), and a caller's bug (a
wrong argument to a function) raises a plain ``ValueError``/``TypeError``. The CLI reports
:class:`SigstreamError` and ``OSError`` in one line with exit status 2 (a traceback with
``-v``); anything else is a bug and keeps its traceback.

Why the root lives here: imports point one way (``stream`` imports ``engines`` and
``devices``; ``engines`` imports ``devices``; ``devices`` imports neither), so ``devices`` is
the one package every layer may import. This module imports nothing, and ``devices`` never
imports torch. :mod:`engines.errors` and :mod:`stream.errors` re-export :class:`SigstreamError`
and :class:`ConfigError`, so each layer imports errors from its own ``errors`` module.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DeviceError", "SigstreamError", "SourceFileError", "VolumeError"]


class SigstreamError(Exception):
    """Root of every error sigstream raises on purpose (the tree is drawn above)."""


class ConfigError(SigstreamError, ValueError):
    """A setting a component refuses before doing any work: an unknown name, a value out of
    range, an option the component does not offer."""


class DeviceError(SigstreamError, RuntimeError):
    """A device or file source (or sink) that cannot open or deliver frames."""


class SourceFileError(DeviceError, ValueError):
    """A replay file that cannot be used: corrupt, ragged, empty or of the wrong shape."""


class VolumeError(SigstreamError, ValueError):
    """A CT or PET volume that cannot be used: a corrupt or truncated DICOM file, a series that
    is not one regular volume (mixed modalities, uneven spacing, duplicate positions), a NIfTI
    with NaN/Inf, or an output that would overwrite its input."""
