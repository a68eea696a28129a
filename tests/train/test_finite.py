"""Finite training: a step whose update makes a weight non-finite is undone, and a run whose
steps keep failing ends with TrainingDiverged instead of training on without learning."""

from __future__ import annotations

import math

import pytest
import torch

from scm_ray.train.engine import FiniteUpdates, TrainingDiverged, skipped_steps_limit


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))


def _backward(model: torch.nn.Module) -> None:
    model.zero_grad()
    model(torch.randn(8, 4)).square().sum().backward()


def test_an_update_that_makes_weights_non_finite_is_undone():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    guard = FiniteUpdates(model, limit=10)
    _backward(model)
    assert not guard.step(torch.optim.SGD(model.parameters(), lr=1e38))  # lr x grad overflows float32
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))

    _backward(model)
    assert guard.step(torch.optim.AdamW(model.parameters(), lr=1e-2))  # an ordinary step is kept
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_nan_weight_is_caught_too():
    model = _model()
    guard = FiniteUpdates(model, limit=10)
    _backward(model)

    class Poison(torch.optim.SGD):
        def step(self, closure=None):
            super().step(closure)
            with torch.no_grad():
                next(iter(model.parameters()))[0, 0] = math.nan

    assert not guard.step(Poison(model.parameters(), lr=0.1))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_failed_steps_in_a_row_end_the_run():
    guard = FiniteUpdates(_model(), limit=3)
    for applied in (False, False, True, False, False, False):  # a kept step resets the count
        guard.count(applied, "here")
    with pytest.raises(TrainingDiverged, match=r"4 optimizer steps in a row .* up to epoch 2 step 7; "
                                               r"limit train.max_skipped_steps=3"):
        guard.count(False, "epoch 2 step 7")


def test_default_limit_is_a_small_fraction_of_an_epoch():
    assert skipped_steps_limit(0, 80) == 10  # at least 10
    assert skipped_steps_limit(0, 8) == 4  # but never more than half an epoch
    assert skipped_steps_limit(0, 1) == 0
    assert skipped_steps_limit(0, 5000) == 250  # 5% of a long epoch
    assert skipped_steps_limit(7, 5000) == 7  # as configured
