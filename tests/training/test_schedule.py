"""tokenmill.training.schedule.warmup_cosine."""

from __future__ import annotations

import pytest

from tokenmill.training.schedule import warmup_cosine

KW = dict(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100)


def lr_at(step, **kw):
    return warmup_cosine(step, **{**KW, **kw})


def test_warmup_is_linear_and_reaches_peak():
    warm = [lr_at(s) for s in range(10)]
    assert warm[0] == pytest.approx(1e-4)  # 1/10 of the peak at the first step, not zero
    diffs = [b - a for a, b in zip(warm, warm[1:])]
    assert all(d == pytest.approx(1e-4) for d in diffs)
    assert warm[-1] == pytest.approx(1e-3)
    assert lr_at(10) == pytest.approx(1e-3)  # cosine starts at the peak


def test_cosine_reaches_floor_at_max_steps_and_stays_there():
    assert lr_at(100) == pytest.approx(1e-4)
    assert lr_at(99) > 1e-4
    assert lr_at(500) == pytest.approx(1e-4)


def test_cosine_midpoint_is_halfway():
    assert lr_at(55) == pytest.approx((1e-3 + 1e-4) / 2)


def test_monotone_decreasing_after_warmup_and_bounded():
    lrs = [lr_at(s) for s in range(10, 101)]
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert all(1e-4 - 1e-12 <= v <= 1e-3 + 1e-12 for v in lrs)


def test_no_warmup_starts_at_peak():
    assert lr_at(0, warmup_steps=0) == pytest.approx(1e-3)
    assert lr_at(100, warmup_steps=0) == pytest.approx(1e-4)
