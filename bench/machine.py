"""What a benchmark reports about the machine it ran on: the CPU and library versions, and
whether other work shared it (a loaded machine is 3-5x slower; say so beside the figures)."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from typing import Any

__all__ = ["loaded_machine_notes", "machine_info", "other_load"]



def _cpu_ticks() -> tuple[int, int]:
    """``(busy, total)`` jiffies of all CPUs since boot (``/proc/stat``; zeros elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _process_ticks() -> dict[int, tuple[str, int]]:
    """``pid -> (command name, utime + stime jiffies)`` of every process readable now."""
    out: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            out[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))
    return out


def other_load(window_s: float = 1.0) -> dict[str, Any]:
    """What other processes did in the next ``window_s`` seconds (this one idle meanwhile):
    the cores they kept busy (``/proc/stat``) and the three busiest of the processes alive
    throughout the window, by command name (short-lived ones count only in ``busy_cores``)."""
    cores = os.cpu_count() or 1
    busy0, total0 = _cpu_ticks()
    procs0 = _process_ticks()
    time.sleep(window_s)
    busy1, total1 = _cpu_ticks()
    procs1 = _process_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    used = sorted(((ticks - procs0[pid][1]) / hz / window_s, name, pid)
                  for pid, (name, ticks) in procs1.items()
                  if pid in procs0 and pid != os.getpid())
    return {
        "busy_cores": round(cores * (busy1 - busy0) / (total1 - total0), 2)
        if total1 > total0 else None,
        "busiest": [{"command": name, "pid": pid, "cores": round(c, 2)}
                    for c, name, pid in reversed(used[-3:]) if c >= 0.05],
    }


def machine_info() -> dict[str, Any]:
    from engines.cache import cpu_name, library_versions

    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": library_versions("torch", "onnxruntime", "torch-tensorrt", "pydicom", "ray"),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "other_work_at_start": other_load(),
    }


def loaded_machine_notes(machine: dict[str, Any], phase_loads: dict[str, float]) -> list[str]:
    """Lines saying that other work shared the machine, from ``machine`` (:func:`machine_info`)
    and the 1-minute load average after each phase; ``[]`` for an idle machine."""
    cores = machine["logical_cpus"] or 1
    notes = []
    other = machine["other_work_at_start"]
    if (other["busy_cores"] or 0) >= 0.25:
        names = ", ".join(f"{p['command']} ({p['cores']} cores)" for p in other["busiest"])
        notes.append(f"{other['busy_cores']} of {cores} cores were busy with other work in the "
                     "second before the run (busiest of the processes alive throughout it: "
                     f"{names or 'none'}): every figure here is lower than an idle machine's")
    if machine["load_avg_1m_at_start"] >= 0.5 * cores:
        notes.append(f"1-minute load average {machine['load_avg_1m_at_start']} on {cores} "
                     "logical CPUs at start")
    # This bench keeps at most ~cores + 1 runnable processes itself (2 workers + supervisor).
    high = {k: v for k, v in phase_loads.items() if v > cores + 1}
    if high:
        notes.append(f"load average above {cores + 1} after {', '.join(high)}: more runnable "
                     "work than this bench makes was running")
    return notes
