"""Tests of the SQLite template store: enrol/list/remove, replace vs extend, change detection
across connections and processes, errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.ecg.templates import TemplateStore, TemplateStoreError, UserRecord
from engines.errors import EngineError

MODEL = "sha256-of-weights"


def _unit(rng: np.random.Generator, n: int, dim: int = 64) -> np.ndarray:
    e = rng.standard_normal((n, dim))
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def test_constructor_does_no_io_and_store_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "t.db"
    store = TemplateStore(path)
    assert not path.exists() and not store.is_open
    with pytest.raises(TemplateStoreError):
        store.users()
    with store:
        assert store.is_open and path.exists()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert store.users() == []
        names, m = store.templates(MODEL)
        assert names == [] and m.shape == (0, 64) and m.dtype == np.float32
    assert not store.is_open
    store.close()  # twice is fine


def test_enrol_list_templates_remove(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b = _unit(rng, 20), _unit(rng, 5)
    with TemplateStore(tmp_path / "t.db") as store:
        rec = store.enroll("bob", b, model_id=MODEL)
        assert isinstance(rec, UserRecord) and rec.n_beats == 5 and rec.model_id == MODEL
        store.enroll("alice", a, model_id=MODEL)
        store.enroll("alice", a[:3], model_id="other-model")
        names, m = store.templates(MODEL)
        assert names == ["alice", "bob"]
        expected = a.astype(np.float64).mean(0)
        np.testing.assert_allclose(m[0], expected / np.linalg.norm(expected), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-6)
        assert [(r.user, r.model_id) for r in store.users()] == [
            ("alice", "other-model"), ("alice", MODEL), ("bob", MODEL)]
        assert [r.user for r in store.users(MODEL)] == ["alice", "bob"]
        assert store.templates("other-model")[0] == ["alice"]
        assert store.remove("alice", model_id="other-model")
        assert store.templates("other-model")[0] == []
        assert store.remove("alice") and not store.remove("alice")
        assert store.templates(MODEL)[0] == ["bob"]


def test_replace_and_extend(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    first, second = _unit(rng, 10), _unit(rng, 6)
    with TemplateStore(tmp_path / "t.db") as store:
        r1 = store.enroll("u", first, model_id=MODEL)
        r2 = store.enroll("u", second, model_id=MODEL, extend=True)
        assert r2.n_beats == 16 and r2.created_s == r1.created_s and r2.updated_s >= r1.updated_s
        both = np.concatenate([first, second]).astype(np.float64).mean(0)
        np.testing.assert_allclose(
            store.templates(MODEL)[1][0], both / np.linalg.norm(both), atol=1e-6)
        r3 = store.enroll("u", second, model_id=MODEL)  # replace
        assert r3.n_beats == 6
        only = second.astype(np.float64).mean(0)
        np.testing.assert_allclose(
            store.templates(MODEL)[1][0], only / np.linalg.norm(only), atol=1e-6)


def test_bad_arguments(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with TemplateStore(tmp_path / "t.db") as store:
        for user in ("", "  ", "a\nb", 3):
            with pytest.raises(ValueError):
                store.enroll(user, _unit(rng, 3), model_id=MODEL)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            store.enroll("u", _unit(rng, 3, dim=32), model_id=MODEL)
        with pytest.raises(ValueError):
            store.enroll("u", np.full((2, 64), np.nan), model_id=MODEL)
        with pytest.raises(ValueError):
            store.enroll("u", np.zeros((2, 64)), model_id=MODEL)
        e = _unit(rng, 1)
        with pytest.raises(ValueError, match="cancel"):
            store.enroll("u", np.concatenate([e, -e]), model_id=MODEL)
        with pytest.raises(ValueError):
            store.enroll("u", _unit(rng, 3), model_id="")
        assert store.users() == []  # nothing half-written


def test_foreign_file_is_a_store_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(TemplateStoreError) as info:
        TemplateStore(bad).open()
    assert isinstance(info.value, EngineError)


def test_changed_across_connections(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "t.db"
    with TemplateStore(path) as worker, TemplateStore(path) as admin:
        assert worker.changed()  # first look
        worker.templates(MODEL)
        assert not worker.changed()
        admin.enroll("x", _unit(rng, 4), model_id=MODEL)
        assert worker.changed() and not worker.changed()
        assert not admin.remove("nobody")
        assert not worker.changed()  # a no-op remove is no change
        admin.remove("x")
        assert worker.changed()


def test_changed_sees_another_process(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    code = (
        "import sys, numpy as np\n"
        "from engines.ecg.templates import TemplateStore\n"
        "with TemplateStore(sys.argv[1]) as s:\n"
        "    s.enroll('other', np.ones((3, 64), np.float32), model_id='m')\n"
    )
    with TemplateStore(path) as worker:
        worker.templates("m")
        assert not worker.changed()
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
        assert worker.changed()
        names, m = worker.templates("m")
        assert names == ["other"]
        np.testing.assert_allclose(m[0], np.full(64, 1 / 8), atol=1e-6)


def test_concurrent_writers_do_not_lose_updates(tmp_path: Path) -> None:
    """Two connections extending the same user in turn: every beat is counted."""
    rng = np.random.default_rng(4)
    path = tmp_path / "t.db"
    with TemplateStore(path) as a, TemplateStore(path) as b:
        for _ in range(5):
            a.enroll("u", _unit(rng, 2), model_id=MODEL, extend=True)
            b.enroll("u", _unit(rng, 3), model_id=MODEL, extend=True)
        assert a.users()[0].n_beats == 25
        assert a.version() == b.version() == 10


def test_store_and_matcher_do_not_load_torch() -> None:
    """A worker that only matches embeddings never pays for torch."""
    code = (
        "import sys\n"
        "import engines.ecg.matcher, engines.ecg.templates\n"
        "from engines.ecg import Matcher, TemplateStore, TemplateStoreError\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parents[2])
