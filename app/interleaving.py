"""Team-draft interleaving of two rankings (Radlinski, Kurup, Joachims, "How does
clickthrough data reflect retrieval quality?", CIKM 2008).

**Rule.** The interleaved list is built in rounds of two picks. At the start of each
round the teams have equally many picks, so a fair coin decides which team picks first;
the other team picks second (this is the paper's "the team with fewer picks picks next,
a coin flip on ties"). A team's pick is its own ranking's highest item not yet in the
list. Each shown item is credited to the team that picked it, so a click on it counts
for that team's ranker (offline analysis: :mod:`analysis.interleaving`).

Team 0 is ranker A, 1 is ranker B (logged as ``"a"`` / ``"b"``). The coins come from
:func:`app.experiments.request_rng`, so the same request id always gets the same
interleaving.
"""

from __future__ import annotations

import numpy as np


def team_draft(order_a: np.ndarray, order_b: np.ndarray, depth: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(the first ``depth`` items of the interleaved order, the team of each position).

    ``order_a`` and ``order_b`` are candidate indices best first, each a permutation of
    the same candidates; fewer than ``depth`` candidates give a shorter list. Cost
    O(depth): a team's pointer never passes position ``depth`` of its ranking (the items
    it skips were taken by the other team), so only the first ``depth`` items are read.
    """
    if len(order_a) != len(order_b) or not np.array_equal(np.sort(order_a), np.sort(order_b)):
        raise ValueError("order_a and order_b must be permutations of the same candidates")
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    depth = min(depth, len(order_a))
    first = rng.integers(0, 2, size=(depth + 1) // 2, dtype=np.int8)  # one coin a round
    teams = np.empty(depth, dtype=np.int8)
    teams[0::2] = first
    teams[1::2] = 1 - first[: depth // 2]
    rankings = (order_a[:depth].tolist(), order_b[:depth].tolist())
    pointer = [0, 0]
    taken: set[int] = set()
    out = []
    for team in teams.tolist():
        ranking, p = rankings[team], pointer[team]
        while ranking[p] in taken:
            p += 1
        pointer[team] = p + 1
        taken.add(ranking[p])
        out.append(ranking[p])
    return np.asarray(out, dtype=order_a.dtype), teams
