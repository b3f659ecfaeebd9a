"""Start-up of the command line: how long ``sigstream --help``, ``sigstream tap --help``, a
``sigstream tap`` that subscribes for 10 ms and ``import stream.cli`` take in a fresh interpreter
(target: <= 0.3 s for ``--help`` and the tap).
Prints JSON (a few seconds).

    python -m bench.cli_start
    python -m bench.cli_start --runs 9 --json runs/cli_start.json

Per command, over ``--runs`` fresh processes of this interpreter (``sigstream`` run as its
console script runs it: ``from stream.cli import main``):

- ``wall_s``: median wall time, process start to exit;
- ``peak_rss_mb``: the largest peak resident memory of one run (``/usr/bin/time -f %M``);
- ``import_ms``: median, from ``-X importtime`` runs: ``stream.cli``, the cumulative time of the
  top-level ``import stream.cli``; ``all``, every top-level import of the process (the paths
  loaded while the parser is built included).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench.harness import emit, free_port
from bench.machine import machine_info

#: ``sigstream``, as its console script runs it.
SIGSTREAM = ["-c", "import sys; from stream.cli import main; sys.exit(main())"]


def _run(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``python argv``, output discarded. GNU time reports
    the RSS: this process's own ``ru_maxrss`` of a child counts the fork from this (larger)
    process."""
    with tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, sys.executable, *argv],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        wall = time.perf_counter() - t0
        return wall, int(rss.read().split()[-1]) / 1024  # kB


def _import_ms(argv: list[str]) -> tuple[float, float]:
    """``-X importtime`` of ``python argv``: cumulative ms of the top-level ``stream.cli``
    import, and of every top-level import."""
    run = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True,
                         text=True, check=True)
    cli = total = 0.0
    for line in run.stderr.splitlines():
        fields = line.split("|")
        if not line.startswith("import time:") or not fields[1].strip().isdigit():
            continue  # the header
        name = fields[2][1:]  # nested imports are indented further
        if not name.startswith(" "):
            total += int(fields[1])
            cli += int(fields[1]) if name == "stream.cli" else 0
    return cli / 1000, total / 1000


def measure(argv: list[str], runs: int) -> dict[str, Any]:
    walls, rss = zip(*(_run(argv) for _ in range(runs)), strict=True)
    cli, total = zip(*(_import_ms(argv) for _ in range(runs)), strict=True)
    return {
        "wall_s": round(statistics.median(walls), 3),
        "peak_rss_mb": round(max(rss), 1),
        "import_ms": {"stream.cli": round(statistics.median(cli), 1),
                      "all": round(statistics.median(total), 1)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per command")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    commands = {
        "sigstream --help": [*SIGSTREAM, "--help"],
        "sigstream tap --help": [*SIGSTREAM, "tap", "--help"],
        # the tap itself: start, subscribe (nothing listens there), 10 ms, exit
        "sigstream tap": [*SIGSTREAM, "tap", "--connect", f"tcp://127.0.0.1:{free_port()}",
                          "--seconds", "0.01"],
        "import stream.cli": ["-c", "import stream.cli"],
    }
    emit({"runs": args.runs, "machine": machine_info(),
          **{name: measure(cmd, args.runs) for name, cmd in commands.items()}}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
