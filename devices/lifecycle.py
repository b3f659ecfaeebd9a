"""The end of a ``with`` block for components that own resources.

A component acquires in ``open()``/``start()`` and releases in ``close()`` (safe to call twice);
its ``__enter__`` says how it starts, and :class:`ClosesOnExit` supplies the one ``__exit__``
they all share: close, whatever the block raised, and let the error propagate.
:class:`OpenCloseState` adds the ``is_open``/``closed`` views of a ``new -> open -> closed``
state for components that keep one.
Pure Python; no numpy, torch or :mod:`stream`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Literal

__all__ = ["ClosesOnExit", "OpenCloseState"]


class ClosesOnExit:
    """Mixin: leaving a ``with`` block calls ``self.close()`` and never swallows the error."""

    def close(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class OpenCloseState(ClosesOnExit):
    """Mixin for a component whose lifecycle is ``self._state``, ``"new"`` then ``"open"``
    then ``"closed"`` (set by its own ``open()``/``close()``)."""

    _state: Literal["new", "open", "closed"] = "new"

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    @property
    def closed(self) -> bool:
        return self._state == "closed"
