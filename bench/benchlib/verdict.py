"""The verdict a bench's summary line ends with, from its per-repeat ratios against the peer."""

from __future__ import annotations


def ratio_verdict(per_repeat: list[float], goal: float) -> str:
    """``met`` when every repeat reaches ``goal``, ``not met`` when none does, else undecided (spread too wide)."""
    above = [x >= goal for x in per_repeat]
    if all(above):
        return "met"
    if not any(above):
        return "not met"
    return f"undecided (spread too wide: per-repeat ratios {min(per_repeat):.2f}-{max(per_repeat):.2f} straddle {goal})"


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile), inclusive method (the quartiles of 2 values are the values)."""
    import statistics

    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def iqr_verdict(per_repeat: list[float], goal: float) -> str:
    """For many short, paired repeats on a noisy machine: ``met`` when the first quartile of the per-repeat ratios
    reaches ``goal``, ``not met`` when the third quartile stays below it; no verdict when the interquartile range
    straddles the goal, or is wider than the effect itself (the median's distance from 1)."""
    q1, median, q3 = quartiles(per_repeat)
    if q3 - q1 > abs(median - 1.0):
        return f"undecided (spread wider than the effect: IQR {q1:.2f}-{q3:.2f} around a median of {median:.2f})"
    if q1 >= goal:
        return "met"
    if q3 < goal:
        return "not met"
    return f"undecided (spread too wide: IQR {q1:.2f}-{q3:.2f} straddles {goal})"
