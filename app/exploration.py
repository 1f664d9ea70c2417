"""Exploration: a controlled randomisation of the served order, with its propensities.

Method: RandTop-N (Wang et al., "Learning to Rank with Selection Bias in Personal
Search", SIGIR 2016; the intervention Joachims et al., WSDM 2017, use to estimate
position bias). On a share ``rate`` of an arm's requests the first ``top`` positions of
the ranked list are shuffled uniformly; the rest of the list, and every other request,
keep the model's order. Why this one:

- On shuffled pages relevance is independent of position, so the click rate at
  position k estimates P(examine k) directly, with the estimator training already has
  (:mod:`training.propensity`, fit of ``k ** -eta``).
- Every item of the top ``top`` has a known, non-zero probability at each of those
  positions, which is what an item-position estimator needs.
- The cost is bounded and easy to reason about: only ``rate`` of the arm's pages are
  disturbed, and only within the top ``top`` items the model already chose. Pairwise
  swaps (RandPair, Wang et al., WSDM 2018) disturb less but need a pair model to turn
  their clicks into propensities.

Logged per shown position (served-feature log ``items.propensity``): the probability
that the logging policy put that item at that position, ``(1 - rate) * [its model
rank is k] + rate / top`` for k <= top, 1 below; and per record ``explored`` (the page
was shuffled).
"""

from __future__ import annotations

import numpy as np

from app.experiments import ExploreSpec, request_rng


def explore(order: np.ndarray, spec: ExploreSpec | None, request_id: str,
            ) -> tuple[np.ndarray, bool, np.ndarray]:
    """(served order, whether it was shuffled, propensity per position of the order); the
    draws are fixed by the request id."""
    propensity = np.ones(len(order))
    if spec is None:
        return order, False, propensity
    rng = request_rng("explore", request_id)
    top = min(spec.top, len(order))
    shuffled = bool(rng.random() < spec.rate)
    served = order.copy()
    if shuffled:
        served[:top] = rng.permutation(order[:top])
    kept = served[:top] == order[:top]  # the item sits at its model rank
    propensity[:top] = spec.rate / spec.top + (1 - spec.rate) * kept
    return served, shuffled, propensity
