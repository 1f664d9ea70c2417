"""Property-based tests of request validation (pure logic, no servers)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.datastructures import QueryParams

from app.listings import CONDITIONS, PRICE_MAX
from app.schemas import Filters, search_request_from_query, search_request_model
from app.scoring import ModelError, resolve_version

SearchBody = search_request_model(max_page_size=100, candidates=400, result_window=10_000)


@given(flow=st.sampled_from(["best_match", "newest"]),
       offset=st.integers(-5, 20_000), size=st.integers(-5, 200))
def test_paging_is_accepted_exactly_within_the_limits(flow, offset, size):
    window = 400 if flow == "best_match" else 10_000
    ok = 0 <= offset and 1 <= size <= 100 and offset + size <= window
    try:
        req = SearchBody(query="nike", flow=flow, offset=offset, size=size)
    except ValidationError:
        assert not ok
        return
    assert (req.window_error() is None) == ok


@given(price=st.floats(allow_nan=True, allow_infinity=True))
def test_prices_are_accepted_only_when_finite_and_in_range(price):
    ok = math.isfinite(price) and 0 <= price <= PRICE_MAX
    try:
        Filters(price_max=price)
    except ValidationError:
        assert not ok
    else:
        assert ok


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_price(value):
    with pytest.raises(ValidationError, match="not a boolean"):
        Filters.model_validate_json(f'{{"price_min": {str(value).lower()}}}')


text = st.text(min_size=1, max_size=30).filter(str.strip)
requests = st.builds(
    dict,
    query=text, flow=st.sampled_from(["best_match", "newest"]),
    user_id=st.one_of(st.none(), text), size=st.integers(1, 100), offset=st.integers(0, 300),
    debug=st.booleans(),
    filters=st.builds(dict, brands=st.lists(text, max_size=3),
                      conditions=st.lists(st.sampled_from(CONDITIONS), max_size=5),
                      price_min=st.one_of(st.none(), st.integers(0, 1000)),
                      on_sale_only=st.booleans()),
)


@given(body=requests)
def test_the_get_form_means_the_same_as_the_post_body(body):
    """Flattened into a query string and parsed back, a request is the same request."""
    flat = [(k, v) for k, v in body.items() if k != "filters" and v is not None]
    for k, v in body["filters"].items():
        flat += [(k, x) for x in v] if isinstance(v, list) else [(k, v)] if v is not None else []
    params = QueryParams([(k, str(v).lower() if isinstance(v, bool) else str(v))
                          for k, v in flat])
    assert SearchBody.model_validate(search_request_from_query(params)) == \
        SearchBody.model_validate(body)


@given(name=st.text(max_size=80), version=st.text(max_size=80))
def test_model_references_never_leave_the_models_directory(tmp_path_factory, name, version):
    root = tmp_path_factory.getbasetemp() / "models"
    try:
        path = resolve_version(root, name, version or "latest")
    except ModelError as exc:
        assert str(root) not in str(exc)
        return
    assert path.resolve().parent.parent == root.resolve()
    assert Path(path.name) == Path(version) and path.parent.name == name


@pytest.mark.parametrize("name", ["..", ".", "a/../..", "/abs", "a\x00b", "ok/"])
def test_unsafe_model_names_are_refused(tmp_path, name):
    with pytest.raises(ModelError):
        resolve_version(tmp_path, name, "1")


@pytest.mark.parametrize("field", ["size", "offset"])
def test_booleans_are_not_page_numbers(field):
    with pytest.raises(ValidationError, match="not a boolean"):
        SearchBody(query="nike", **{field: True})
