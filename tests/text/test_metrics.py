"""Text metrics against slow loop references (one text, one step at a time)."""

from __future__ import annotations

import math

import pytest
import torch

from semantic_pullbacks.text.metrics import (
    comprehensiveness,
    deletion_curves,
    sequence_pointing_game,
    sufficiency,
)

REPLACE = 0


def score_fn(ids, mask):
    """A nonlinear, order-sensitive score of the ids: each call sees a whole batch."""
    w = torch.linspace(0.5, 1.5, ids.shape[1])
    return torch.tanh(((ids.float() * w) * mask).sum(1) / 50.0) + 0.01 * (ids[:, 0] == 7).float()


@pytest.fixture
def batch():
    torch.manual_seed(0)
    ids = torch.randint(1, 30, (4, 12))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    protected = torch.zeros_like(ids, dtype=torch.bool)
    protected[:, 0] = True  # a [CLS]-like token
    protected |= mask == 0
    relevance = torch.randn(4, 12)
    return ids, mask, relevance, protected


def order(rel, prot, descending):
    idx = [i for i in range(len(rel)) if not prot[i]]
    return sorted(idx, key=lambda i: -rel[i] if descending else rel[i])


def loop_aopc(ids, mask, rel, prot, fractions, keep_top):
    out = []
    for b in range(ids.shape[0]):
        row, m, r, p = ids[b].tolist(), mask[b : b + 1], rel[b].tolist(), prot[b].tolist()
        full = float(score_fn(torch.tensor([row]), m)[0])
        n = sum(1 for q in p if not q)
        ranked = order(r, p, True)
        diffs = []
        for f in fractions:
            k = min(n, max(1, math.ceil(f * n - 1e-9)))
            top = set(ranked[:k])
            new = list(row)
            for i in range(len(row)):
                if p[i]:
                    continue
                if (i in top) != keep_top:
                    new[i] = REPLACE
            diffs.append(full - float(score_fn(torch.tensor([new]), m)[0]))
        out.append(sum(diffs) / len(diffs))
    return torch.tensor(out)


FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)


def test_comprehensiveness_matches_loop(batch):
    ids, mask, rel, prot = batch
    got = comprehensiveness(score_fn, ids, mask, rel, prot, REPLACE, FRACTIONS)
    torch.testing.assert_close(got, loop_aopc(ids, mask, rel, prot, FRACTIONS, keep_top=False))


def test_sufficiency_matches_loop(batch):
    ids, mask, rel, prot = batch
    got = sufficiency(score_fn, ids, mask, rel, prot, REPLACE, FRACTIONS)
    torch.testing.assert_close(got, loop_aopc(ids, mask, rel, prot, FRACTIONS, keep_top=True))


def test_deletion_curves_match_loop(batch):
    ids, mask, rel, prot = batch
    steps = 4
    curves = deletion_curves(score_fn, ids, mask, rel, prot, REPLACE, steps=steps)
    for b in range(ids.shape[0]):
        row, p, r = ids[b].tolist(), prot[b].tolist(), rel[b].tolist()
        n = sum(1 for q in p if not q)
        for name, descending in (("morf", True), ("lerf", False)):
            ranked = order(r, p, descending)
            for s in range(steps + 1):
                k = round(s / steps * n)
                new = [REPLACE if i in ranked[:k] else t for i, t in enumerate(row)]
                expected = float(score_fn(torch.tensor([new]), mask[b : b + 1])[0])
                assert getattr(curves, name)[s, b].item() == pytest.approx(expected, abs=1e-6)
        assert curves.abc[b].item() == pytest.approx(float((curves.lerf[:, b] - curves.morf[:, b]).mean()))


def test_sequence_pointing_game_matches_loop(batch):
    _, _, rel, prot = batch
    segment = torch.zeros_like(prot)
    segment[:, 6:] = True
    got = sequence_pointing_game(rel, segment, prot)
    for b in range(rel.shape[0]):
        pos = [max(0.0, v) if not prot[b, i] else 0.0 for i, v in enumerate(rel[b].tolist())]
        expected = sum(v for i, v in enumerate(pos) if segment[b, i]) / sum(pos)
        assert got[b].item() == pytest.approx(expected)


def test_a_perfect_explanation_scores_better_than_its_reverse(batch):
    """The metric direction: ranking tokens by their true effect beats the reverse ranking."""
    ids, mask, _, prot = batch
    w = torch.linspace(0.5, 1.5, ids.shape[1])
    true_effect = ids.float() * w  # each token's contribution to the score's argument
    good = comprehensiveness(score_fn, ids, mask, true_effect, prot, REPLACE)
    bad = comprehensiveness(score_fn, ids, mask, -true_effect, prot, REPLACE)
    assert (good > bad).all()
