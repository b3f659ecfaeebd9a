"""A path plugs in without editing the project: :mod:`tiny_path` declares a small path of its
own (a model, a stream stage, an engine worker, a settings section and a result line); the tests
install it as a ``sigstream.paths`` entry point (:func:`conftest.tiny_plugin`), then serve it
with ``sigstream run`` through real processes and sockets, as ``docs/architecture.md`` ("How to
add a path") describes.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from service_client import REPO, Client, CliService
from tiny_path import SAMPLES


def test_a_path_declared_outside_the_project_is_served_end_to_end(
        tiny_plugin: dict[str, str]) -> None:
    # The CLI lists it, with its own option, beside the built-in paths.
    usage = subprocess.run([sys.executable, "-m", "stream.cli", "run", "tiny", "--help"],
                           cwd=REPO, env={**tiny_plugin, "PATH": ""}, capture_output=True,
                           text=True, timeout=120)
    assert usage.returncode == 0 and "--scale" in usage.stdout, usage.stderr

    run = CliService(None, "--scale", "2", "--workers", "2", path="tiny", env=tiny_plugin)
    try:
        ingest, publish = run.ready()
        client = Client(ingest, publish)
        try:
            rng = np.random.default_rng(0)
            blips = rng.normal(size=(40, SAMPLES)).astype(np.float32)
            for seq, x in enumerate(blips):
                client.send("dev-1", seq, x, kind="blip", t_ns=0, fs=10.0)
            client.send("dev-1", 40, np.zeros(3, np.float32), kind="blip", t_ns=0, fs=10.0)
            client.send("dev-1", 41, blips[0], kind="blip", t_ns=0)  # no fs
            client.send("dev-1", 42, blips[0], kind="spectrum", t_ns=0)
            answers = client.wait_for(lambda got: len(got) >= 43)
        finally:
            client.close()
    finally:
        run.close()

    by_seq = {m.seq: m for m in answers if m.stream == "dev-1"}
    assert sorted(by_seq) == list(range(43)), "every message answered once"
    weights = np.array([1.0, -2.0, 0.5, 0.25], np.float32)
    for seq, x in enumerate(blips):
        assert by_seq[seq].kind == "result.tiny"
        assert by_seq[seq].payload["score"] == pytest.approx(2 * float(x @ weights), rel=1e-5)
    codes = {seq: by_seq[seq].payload.get("code") for seq in (40, 41, 42)}
    assert codes == {40: "bad_shape", 41: "missing_field", 42: "wrong_kind"}


def test_the_registry_lists_a_plug_in_after_the_built_in_paths(
        tiny_plugin: dict[str, str]) -> None:
    code = ("from stream.paths import path_specs\n"
            "from stream.tap import format_message\n"
            "from stream.wire import result_message\n"
            "print(' '.join(spec.name for spec in path_specs()))\n"
            "msg = result_message('tiny', {'stream': 'dev-1', 'seq': 7, 't_ns': 0}, "
            "{'score': 1.5})\n"
            "print(format_message(msg, 0))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=tiny_plugin,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    names, line = run.stdout.splitlines()
    assert names == "spectral ecg codec ct pet tiny"
    assert line.startswith("dev-1  seq=7  ") and line.endswith("  score=+1.500")
