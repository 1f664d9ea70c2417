"""Team-draft interleaving: the online draft (app.interleaving) and the offline analysis
(analysis.interleaving), on hand-made events and simulated user populations."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.interleaving import analyse_interleaving, credit, sign_test
from app.experiments import request_rng
from app.interleaving import team_draft


def check_draft(order_a: np.ndarray, order_b: np.ndarray, depth: int, seed: int) -> None:
    served, teams = team_draft(order_a, order_b, depth, np.random.default_rng(seed))
    assert len(served) == len(teams) == min(depth, len(order_a))
    assert len(set(served.tolist())) == len(served)
    rankings = (order_a.tolist(), order_b.tolist())
    counts = [0, 0]
    for i, (item, team) in enumerate(zip(served.tolist(), teams.tolist(), strict=True)):
        if counts[0] != counts[1]:  # the team with fewer picks picks next
            assert counts[team] < counts[1 - team]
        taken = set(served[:i].tolist())
        assert item == next(c for c in rankings[team] if c not in taken)
        counts[team] += 1
        assert abs(counts[0] - counts[1]) <= 1


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 40).flatmap(lambda n: st.tuples(
    st.permutations(range(n)), st.permutations(range(n)), st.integers(0, n + 3),
    st.integers(0, 2**32 - 1))))
def test_team_draft_properties(case):
    order_a, order_b, depth, seed = case
    check_draft(np.array(order_a, dtype=np.int64), np.array(order_b, dtype=np.int64),
                depth, seed)


def test_team_draft_on_400_candidates():
    rng = np.random.default_rng(1)
    for seed in range(50):
        check_draft(rng.permutation(400), rng.permutation(400), 100, seed)


def test_identical_rankings_give_a():
    order = np.random.default_rng(2).permutation(50)
    for seed in range(20):
        served, _ = team_draft(order, order.copy(), 30, np.random.default_rng(seed))
        assert served.tolist() == order[:30].tolist()


def test_first_position_is_a_fair_coin():
    order_a, order_b = np.arange(10), np.arange(10)[::-1].copy()
    leads = [team_draft(order_a, order_b, 5, request_rng("s", f"r{i}"))[1][0]
             for i in range(4000)]
    assert 0.46 < 1 - np.mean(leads) < 0.54


def test_rejects_different_candidates_and_negative_depth():
    with pytest.raises(ValueError):
        team_draft(np.arange(5), np.arange(1, 6), 3, np.random.default_rng(0))
    with pytest.raises(ValueError):
        team_draft(np.arange(5), np.arange(5), -1, np.random.default_rng(0))


def test_request_rng_is_fixed_by_the_request_id():
    draw = request_rng("salt", "req-1").random(4)
    assert np.array_equal(draw, request_rng("salt", "req-1").random(4))
    assert not np.array_equal(draw, request_rng("salt", "req-2").random(4))
    assert not np.array_equal(draw, request_rng("other", "req-1").random(4))


def events_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, orient="row", schema={
        "request_id": pl.String, "user_id": pl.String, "session_id": pl.String,
        "event": pl.String, "item_id": pl.String, "position": pl.Int64, "team": pl.String})


def shown(request: str, user: str | None, items: str, teams: str) -> list[tuple]:
    return [(request, user, f"s-{request}", "impression", item, pos, team)
            for pos, (item, team) in enumerate(zip(items, teams, strict=True), start=1)]


def act(request: str, user: str | None, event: str, item: str) -> tuple:
    return (request, user, f"s-{request}", event, item, None, None)


HAND_MADE = events_frame(
    shown("r1", "u1", "xyz", "aba") + [act("r1", "u1", "click", "y")]  # B's item: B wins
    + shown("r2", "u1", "pq", "ab") + [act("r2", "u1", "click", "p"),
                                       act("r2", "u1", "click", "q")]  # one each: tie
    + shown("r3", "u2", "mn", "ba") + [act("r3", "u2", "click", "n"),
                                       act("r3", "u2", "click", "n"),  # counted once
                                       act("r3", "u2", "click", "m"),
                                       act("r3", "u2", "purchase", "n"),
                                       act("r3", "u2", "click", "w")]  # not shown: ignored
    + shown("r4", "u2", "kl", "ab")  # no click: no outcome
    + shown("r5", None, "gh", "ba") + [act("r5", None, "click", "g"),  # anonymous: session
                                       act("r5", None, "purchase", "g")]
    + [(*row[:6], None) for row in shown("r6", "u3", "ef", "ab")]  # not interleaved
    + [act("r6", "u3", "click", "e")])


def test_click_credit_per_request():
    got = credit(HAND_MADE, "click").sort("request_id")
    assert got["request_id"].to_list() == ["r1", "r2", "r3", "r4", "r5"]
    assert got["unit"].to_list() == ["u1", "u1", "u2", "u2", "s-r5"]
    assert got["credit_a"].to_list() == [0, 1, 1, 0, 0]
    assert got["credit_b"].to_list() == [1, 1, 1, 0, 1]
    assert got["outcome"].to_list() == ["b", "tie", "tie", None, "b"]


def test_purchase_credit_per_request():
    got = credit(HAND_MADE, "purchase").sort("request_id")
    assert got["outcome"].to_list() == [None, None, "a", None, "b"]


def test_analysis_of_hand_made_events():
    clicks = analyse_interleaving(HAND_MADE, "click")
    assert (clicks["requests"], clicks["requests_with_signal"]) == (5, 4)
    assert (clicks["request_wins_a"], clicks["request_wins_b"], clicks["request_ties"]) \
        == (0, 2, 2)
    # u1: B won 1, A 0 -> B; u2: tie only -> tie; s-r5: B
    assert (clicks["unit_wins_a"], clicks["unit_wins_b"], clicks["unit_ties"]) == (0, 2, 1)
    assert clicks["delta"] == pytest.approx((0 + 0.5) / 3 - 0.5)
    assert clicks["p_value"] == 0.5 and clicks["preferred"] == "no preference"
    purchases = analyse_interleaving(HAND_MADE, "purchase")
    assert (purchases["unit_wins_a"], purchases["unit_wins_b"]) == (1, 1)
    with pytest.raises(ValueError):
        analyse_interleaving(HAND_MADE, "like")


def test_sign_test():
    assert sign_test(0, 10) == pytest.approx(2 / 1024)
    assert sign_test(10, 0) == sign_test(0, 10)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    exact = 2 * sum(math.comb(1001, i) for i in range(471)) / 2**1001
    assert sign_test(470, 531) == pytest.approx(exact, rel=0.02)  # normal approximation


def simulate(seed: int, users: int, requests: int, noise_a: float | None,
             n: int = 20, depth: int = 10) -> pl.DataFrame:
    """Clicks from a position-biased model on true relevance. B ranks by relevance with
    a little noise, A with ``noise_a``; ``noise_a=None`` is an A/A: every item equally
    relevant, A and B two random permutations."""
    rng = np.random.default_rng(seed)
    examine = 1 / np.arange(1, depth + 1)
    served, teams, clicked = [], [], []
    for _ in range(users * requests):
        if noise_a is None:
            rel = np.full(n, 0.5)
            order_a, order_b = rng.permutation(n), rng.permutation(n)
        else:
            rel = rng.random(n)
            order_a = np.argsort(-(rel + noise_a * rng.standard_normal(n)))
            order_b = np.argsort(-(rel + 0.1 * rng.standard_normal(n)))
        items, team = team_draft(order_a, order_b, depth, rng)
        served.append(items)
        teams.append(team)
        clicked.append(rng.random(depth) < examine * rel[items])
    request = np.repeat(np.arange(users * requests), depth)
    shown_items, hit = np.concatenate(served), np.concatenate(clicked)
    impressions = pl.DataFrame({
        "request": request, "event": "impression", "item_id": shown_items,
        "team": np.where(np.concatenate(teams) == 0, "a", "b")})
    clicks = pl.DataFrame({"request": request[hit], "event": "click",
                           "item_id": shown_items[hit], "team": None})
    return pl.concat([impressions, clicks], how="vertical_relaxed").select(
        request_id=pl.format("r{}", "request"), user_id=pl.format("u{}", pl.col("request") % users),
        event="event", item_id=pl.col("item_id").cast(pl.String), team="team")


def test_better_ranker_b_is_preferred():
    result = analyse_interleaving(simulate(0, users=300, requests=3, noise_a=1.0))
    assert result["preferred"] == "b" and result["p_value"] < 0.05
    assert result["delta"] < result["ci_high"] < 0


def test_a_a_rejects_at_about_the_level():
    rejections = [analyse_interleaving(simulate(seed, users=100, requests=2, noise_a=None),
                                       n_boot=200)["p_value"] < 0.05
                  for seed in range(200)]
    assert np.mean(rejections) <= 0.08
