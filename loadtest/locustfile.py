"""Realistic search traffic for bestmatch, or the same recall queries sent to the engine.

Traffic: queries drawn by popularity (head and long tail) from ``--queries`` (a file,
one query per line) or from the marketplace simulator's query generator (Japanese and
English, brand / product / category / condition); 20% of searches carry a category,
10% a price ceiling, 5% conditions; 15% ask for the second page; 60% come from
logged-in users (a pool of 20,000), the rest from anonymous sessions.

``--target service`` (default) POSTs ``/v1/search``; ``--target engine`` sends each
search's recall query (``app.recall.best_match_query``: K candidates, same filters and
decay) straight to the engine's ``/{alias}/_search``, for the engine-alone comparison.
``--max-p99-ms`` and ``--max-error-ratio`` make the run exit 1 when exceeded.

    locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:8000
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from locust import FastHttpUser, between, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.listings import CONDITIONS  # noqa: E402
from app.recall import RecallParams, best_match_query, to_engine_json  # noqa: E402
from app.schemas import Filters  # noqa: E402
from app.tokenizer import tokenize_query  # noqa: E402

QUERIES: list[str] = []
WEIGHTS: list[float] = []
CATEGORY_NAMES: list[str] = []


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--target", choices=["service", "engine"], default="service")
    parser.add_argument("--queries", default="", help="one query per line (default: simulator)")
    parser.add_argument("--n-queries", type=int, default=2000,
                        help="simulator queries to draw from")
    parser.add_argument("--index-alias", default="listings", help="engine target only")
    parser.add_argument("--max-p99-ms", type=float, default=0.0, help="0: no threshold")
    parser.add_argument("--max-error-ratio", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)


@events.init.add_listener
def _load_queries(environment, **kwargs) -> None:
    options = environment.parsed_options
    from training.simulator.catalog import CATEGORIES

    CATEGORY_NAMES[:] = [c.name for c in CATEGORIES]
    if options.queries:
        QUERIES[:] = [q for q in Path(options.queries).read_text().splitlines() if q.strip()]
        WEIGHTS[:] = [1.0 / (rank + 1) for rank in range(len(QUERIES))]  # file order = head
    else:
        from training.simulator.queries import generate_queries

        qs = generate_queries(options.n_queries, options.seed)
        QUERIES[:], WEIGHTS[:] = qs.texts, qs.popularity.tolist()


@events.quitting.add_listener
def _thresholds(environment, **kwargs) -> None:
    """Fail the run (exit 1) when the p99 or the error ratio passes its threshold."""
    options, total = environment.parsed_options, environment.stats.total
    failures = []
    p99 = total.get_response_time_percentile(0.99) or 0.0
    if options.max_p99_ms and p99 > options.max_p99_ms:
        failures.append(f"p99 {p99:.0f} ms > {options.max_p99_ms:.0f} ms")
    if total.fail_ratio > options.max_error_ratio:
        failures.append(f"error ratio {total.fail_ratio:.2%} > {options.max_error_ratio:.2%}")
    if failures:
        print("THRESHOLDS FAILED: " + "; ".join(failures), file=sys.stderr)
        environment.process_exit_code = 1


def random_search(rng: random.Random) -> dict:
    """One search request body, as the marketplace frontend would send it."""
    filters: dict = {}
    if rng.random() < 0.20:
        filters["category"] = rng.choice(CATEGORY_NAMES)
    if rng.random() < 0.10:
        filters["price_max"] = rng.choice([3000, 10000, 30000, 100000])
    if rng.random() < 0.05:
        filters["conditions"] = rng.sample(CONDITIONS, 2)
    body = {"query": rng.choices(QUERIES, WEIGHTS)[0], "size": 20,
            "offset": 20 if rng.random() < 0.15 else 0, "filters": filters}
    if rng.random() < 0.60:
        body["user_id"] = f"u{rng.randrange(20_000)}"
    else:
        body["session_id"] = f"s{rng.getrandbits(48):x}"
    return body


class Searcher(FastHttpUser):
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.target = self.environment.parsed_options.target
        self.alias = self.environment.parsed_options.index_alias

    @task
    def search(self) -> None:
        body = random_search(self.rng)
        if self.target == "service":
            self.client.post("/v1/search", json=body, name="/v1/search")
            return
        recall = best_match_query(tokenize_query(body["query"])[0],
                                  Filters(**body["filters"]), RecallParams(),
                                  int(time.time() * 1000))
        self.client.post(f"/{self.alias}/_search", json=to_engine_json(recall),
                         name="engine _search")
