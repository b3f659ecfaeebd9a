"""Tests of the cosine matcher: identification, verification, thresholds, k-beat fusion."""

from __future__ import annotations

import numpy as np
import pytest

from engines.ecg.matcher import ACCEPT, REJECT, UNCERTAIN, FusionState, Matcher, fuse


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def templates() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    return ["ann", "ben", "cat"], _unit(rng.standard_normal((3, 64)))


def test_decide_bands() -> None:
    m = Matcher(0.8, 0.5)
    assert m.decide(0.8) == ACCEPT and m.decide(0.95) == ACCEPT
    assert m.decide(0.79) == UNCERTAIN and m.decide(0.5) == UNCERTAIN
    assert m.decide(0.49) == REJECT
    for a, r in ((0.5, 0.8), (1.5, 0.0), (0.5, -2.0)):
        with pytest.raises(ValueError):
            Matcher(a, r)
    with pytest.raises(ValueError):
        Matcher(0.8, 0.5, fuse_beats=0)


def test_score_identifies_the_nearest_template(templates: tuple[list[str], np.ndarray]) -> None:
    names, t = templates
    rng = np.random.default_rng(1)
    probe = _unit(t[1] + 0.2 * rng.standard_normal((5, 64)))
    r = Matcher(0.6, 0.3).score(probe, templates)
    assert r.user == "ben" and r.n_beats == 5 and r.decision == ACCEPT
    assert r.scores.shape == (3,) and r.scores.dtype == np.float32
    np.testing.assert_allclose(r.scores, t @ fuse(probe), atol=1e-6)
    assert r.score == pytest.approx(float(r.scores.max()))
    single = Matcher(0.6, 0.3).score(probe[0], templates)
    assert single.n_beats == 1 and single.user == "ben"


def test_nobody_enrolled_is_reject() -> None:
    r = Matcher(0.6, 0.3).score(np.ones(64, np.float32), ([], np.zeros((0, 64), np.float32)))
    assert r.user is None and r.decision == REJECT and r.scores.shape == (0,)


def test_verify_scores_only_the_claim(templates: tuple[list[str], np.ndarray]) -> None:
    names, t = templates
    m = Matcher(0.9, 0.5)
    genuine = m.verify(t[0], "ann", templates)
    assert genuine.decision == ACCEPT and genuine.score == pytest.approx(1.0, abs=1e-6)
    impostor = m.verify(t[0], "cat", templates)
    assert impostor.user == "cat" and impostor.score == pytest.approx(float(t[2] @ t[0]), abs=1e-6)
    assert impostor.decision == REJECT
    unknown = m.verify(t[0], "zed", templates)
    assert unknown.decision == REJECT and unknown.score == float("-inf")
    with pytest.raises(ValueError):
        m.verify(np.ones(32, np.float32), "ann", templates)


def test_fusion_state_keeps_last_k() -> None:
    rng = np.random.default_rng(2)
    e = _unit(rng.standard_normal((7, 64)))
    s = FusionState(3)
    assert s.fused() is None and len(s) == 0
    for row in e:
        s.add(row)
    assert len(s) == 3 and s.full
    np.testing.assert_array_equal(s.embeddings(), e[-3:])
    mean = e[-3:].astype(np.float64).mean(0)
    fused = s.fused()
    assert fused is not None
    np.testing.assert_allclose(fused, mean / np.linalg.norm(mean), atol=1e-6)
    with pytest.raises(ValueError):
        s.add(np.ones(32))
    with pytest.raises(ValueError):
        s.add(np.full(64, np.nan))
    s.reset()
    assert len(s) == 0 and s.fused() is None
    assert Matcher(0.7, 0.4, fuse_beats=5).new_state().k == 5


def test_fusion_raises_genuine_scores() -> None:
    """Averaging noisy beats of one person moves the probe towards the template."""
    rng = np.random.default_rng(3)
    template = _unit(rng.standard_normal(64))
    beats = _unit(template + 0.15 * rng.standard_normal((200, 64)))
    single = beats @ template
    fused = np.array([fuse(beats[i : i + 5]) @ template for i in range(0, 200, 5)])
    assert fused.mean() > single.mean() and fused.std() < single.std()


def test_from_card() -> None:
    card = {"accept_threshold": 0.8, "reject_threshold": 0.6, "fuse_beats": 4}
    m = Matcher.from_card(card)
    assert (m.accept_threshold, m.reject_threshold, m.fuse_beats) == (0.8, 0.6, 4)
    with pytest.raises(KeyError):
        Matcher.from_card({})


def test_from_card_picks_the_calibrated_k() -> None:
    card = {
        "accept_threshold": 0.8, "reject_threshold": 0.6, "fuse_beats": 5,
        "thresholds_by_k": {"1": {"accept_threshold": 0.9, "reject_threshold": 0.7},
                            "5": {"accept_threshold": 0.8, "reject_threshold": 0.6}},
    }
    m1 = Matcher.from_card(card, fuse_beats=1)
    assert (m1.accept_threshold, m1.reject_threshold, m1.fuse_beats) == (0.9, 0.7, 1)
    assert Matcher.from_card(card, fuse_beats=5).accept_threshold == 0.8
    with pytest.raises(KeyError):
        Matcher.from_card(card, fuse_beats=3)


def test_claims_use_their_own_threshold() -> None:
    names = ["alice", "bob"]
    templates = np.eye(2, 8, dtype=np.float32)
    probe = fuse(np.array([0.7, 0.0, 0.71, 0, 0, 0, 0, 0]))  # cosine 0.70 with alice
    strict = Matcher(0.9, 0.8)
    lenient = Matcher(0.9, 0.8, verify_threshold=0.6)
    assert strict.score(probe, (names, templates)).decision == REJECT  # identification
    assert strict.verify(probe, "alice", (names, templates)).decision == REJECT
    assert lenient.verify(probe, "alice", (names, templates)).decision == ACCEPT
    assert lenient.verify(probe, "bob", (names, templates)).decision == REJECT
    card = {"accept_threshold": 0.9, "reject_threshold": 0.8, "fuse_beats": 5,
            "thresholds_by_k": {"5": {"verify_threshold": 0.6}}}
    assert Matcher.from_card(card).verify_threshold == 0.6
    with pytest.raises(ValueError):
        Matcher(0.9, 0.8, verify_threshold=1.5)
