"""Atomic outputs: a series folder or a file is written under a temporary sibling name and
renamed into place at the end, so an error or Ctrl-C never leaves a half-written output (the
temporary is removed on the way out). Outputs never overwrite: an existing target, or a target
that is or holds an input file, is refused before anything is written.

An output folder that cannot be created or written raises the ``OSError`` the system gave
(``errno`` kept), its message naming the folder, as the project does for every file it cannot
write (see :mod:`devices.errors`).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from devices.errors import VolumeError

__all__ = ["atomic_file", "atomic_folder", "check_target"]


def check_target(target: Path, inputs: Iterable[Path]) -> None:
    """Refuse ``target`` when it is an input file or holds one (:class:`VolumeError`), or when
    it exists (``FileExistsError``)."""
    resolved = target.resolve()
    for path in inputs:
        if path.resolve() == resolved or resolved in path.resolve().parents:
            raise VolumeError(f"{target}: the output would overwrite the input file {path}")
    if target.exists() or target.is_symlink():
        raise FileExistsError(errno.EEXIST, "the output exists; refusing to overwrite it",
                              str(target))


def _make_parent(parent: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot create the output folder ({exc.strerror})",
                        str(parent)) from exc


def _temporary_name(target: Path) -> Path:
    # A random name, created by whoever writes it, so the result gets the user's umask (mkdtemp
    # and mkstemp would make it private); it ends with the target's name to keep its suffixes
    # (nibabel picks gzip from ".nii.gz").
    return target.with_name(f".tmp-{secrets.token_hex(6)}-{target.name}")


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; rename it to ``target`` when the
    block ends normally, remove it when the block raises (anything, KeyboardInterrupt too)."""
    _make_parent(target.parent)
    tmp = _temporary_name(target)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write in the output folder ({exc.strerror})",
                        str(target.parent)) from exc
    try:
        yield tmp
        if target.exists():  # rename() would silently replace an empty folder made meanwhile
            raise FileExistsError(errno.EEXIST, "the output appeared while it was written",
                                  str(target))
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary empty file beside ``target`` that keeps its suffixes; move it to
    ``target`` with ``os.replace`` when the block ends normally, remove it when it raises."""
    _make_parent(target.parent)
    tmp = _temporary_name(target)
    try:
        tmp.open("xb").close()  # fails here, naming the folder, when it cannot be written
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write in the output folder ({exc.strerror})",
                        str(target.parent)) from exc
    try:
        yield tmp
        if target.exists():
            raise FileExistsError(errno.EEXIST, "the output appeared while it was written",
                                  str(target))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
