"""A seeded marketplace simulator: catalog, queries, search sessions and their logs.

No real logs are available, so training and evaluation run on a simulated marketplace
whose ground truth is known. See :mod:`.catalog` (listings), :mod:`.queries` (intents,
query text, true relevance), :mod:`.recall` (the engine's recall query, reproduced) and
:mod:`.sessions` (users, bots, the position-biased click model and the engagement
journey, written as event logs).
"""

from training.simulator.catalog import (
    CATEGORIES,
    CONDITION_WORDS,
    Catalog,
    generate_catalog,
    generate_listings,
)

__all__ = ["CATEGORIES", "CONDITION_WORDS", "Catalog", "generate_catalog",
           "generate_listings"]
