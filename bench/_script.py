"""For a bench run as a file (``python bench/x.py``): re-run it as the module
``python -m bench.x``, with the same arguments and working directory.

Run as a file, Python puts ``bench/`` first on ``sys.path`` and the ``bench`` package cannot
be imported; run as a module with the repository root on ``PYTHONPATH`` it can, and so can
the spawned processes of a bench, which import their target by its module name. Each bench
starts with::

    if not __package__:  # run as a file
        import _script

        _script.rerun_as_module()
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

__all__ = ["rerun_as_module"]


def rerun_as_module() -> NoReturn:
    """Replace this process with ``python -m bench.<name of sys.argv[0]> <its arguments>``."""
    main = Path(sys.argv[0]).resolve()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(main.parent.parent), env.get("PYTHONPATH")) if p
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", f"bench.{main.stem}", *sys.argv[1:]], env)
