"""The course's colours, for widgets and lessons alike (a lesson imports them rather than restating them).

Okabe & Ito (2008), colour-blind safe; ordered so that the low-contrast yellow comes late.
"""

from __future__ import annotations

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
BLUE, ORANGE, GREEN, PURPLE, SKY, VERMILLION, YELLOW, BLACK = OKABE_ITO
GREY = "#7F7F7F"

__all__ = ["BLACK", "BLUE", "GREEN", "GREY", "OKABE_ITO", "ORANGE", "PURPLE", "SKY", "VERMILLION", "YELLOW",
           "group_colors"]


def group_colors(n_experts: int, n_group: int) -> list[str]:
    """One Okabe-Ito colour per expert group, for ``n_experts`` experts in ``n_group`` equal groups (colours
    repeat beyond 8 groups)."""
    per = max(1, n_experts // max(1, n_group))
    return [OKABE_ITO[(i // per) % len(OKABE_ITO)] for i in range(n_experts)]
