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
