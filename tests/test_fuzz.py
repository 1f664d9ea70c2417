"""Fuzzing the HTTP API from its own OpenAPI document, on both backends.

schemathesis turns every operation of ``/openapi.json`` into a Hypothesis strategy of
requests, valid ones and (negative mode) ones that break the schema on purpose; each is
sent to the service in-process and its answer checked: never a 5xx (a 503 only where a
dependency is really absent: none is here), and status, headers and body as documented.
Half the admin calls carry the right token, so the reload paths run too; half the
searches drop a generated experiment-arm override (a 403 without the token). A run sends at
least ``MIN_CASES`` requests per backend.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

pytestmark = [pytest.mark.integration,
              pytest.mark.parametrize("backend", ["real", "embedded"], indirect=True)]

MIN_CASES = 1000
# Rules JSON Schema cannot state (across fields, or about an image's content; they are
# in the descriptions): a schema-valid request may break them and get its 422.
UNSTATABLE = ("offset + size must be at most", "price_min must not exceed price_max",
              "not a base64-encoded image")
# Examples per operation and generation mode; enough for MIN_CASES in all.
EXAMPLES = {"/v1/search": 220, "/v1/moderate": 60, "/admin/model/reload": 50,
            "/admin/experiments/reload": 15, "/readyz": 15}


def fuzz_operation(client, operation, mode: GenerationMode, examples: int) -> list[int]:
    """Send ``examples`` generated requests; the statuses answered."""
    statuses: list[int] = []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        headers = kwargs.setdefault("headers", {})
        if len(statuses) % 2:
            if operation.path.startswith("/admin"):
                headers["X-Admin-Token"] = "secret"
            else:  # an arm override without the token is a 403: let the search run too
                headers.pop("x-experiment-arm", None)
        resp = client.request(**{k: v for k, v in kwargs.items()
                                 if k in ("method", "url", "headers", "params", "content",
                                          "json", "data", "files", "cookies")})
        statuses.append(resp.status_code)
        assert resp.status_code < 500, (case.as_curl_command(), resp.text)
        if resp.status_code == 422 and all(any(rule in f["message"] for rule in UNSTATABLE)
                                           for f in resp.json()["fields"]):
            return
        if mode is GenerationMode.POSITIVE or resp.status_code < 300:
            case.validate_response(resp)
        else:  # invalid input: the documented error shape, whatever the status
            body = resp.json()
            assert resp.status_code in (400, 401, 403, 404, 405, 409, 422), resp.text
            assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str)

    try:
        run()
    except Unsatisfiable:  # negative mode: nothing of this operation can be made invalid
        assert mode is GenerationMode.NEGATIVE and not statuses
    return statuses


def test_generated_requests_get_documented_answers_and_no_5xx(client_for, bundle, publish,
                                                               tmp_path):
    publish("v1", [("p1", 0.4, 50.0, 0.01), ("s1", 0.1, 20.0, 0.002)])
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text("experiments: []\n")
    with client_for(moderation_model_dir=bundle[0], experiments_file=experiments) as client:
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        statuses: Counter[int] = Counter()
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in GenerationMode:
                statuses.update(fuzz_operation(client, operation, mode,
                                               EXAMPLES.get(operation.path, 5)))
        assert client.get("/healthz").status_code == 200
    print(f"fuzz: {statuses.total()} cases, answers by status {dict(sorted(statuses.items()))}")
    assert statuses.total() >= MIN_CASES, statuses
    assert statuses[200] >= 100, statuses  # the generator reached the service, not only 422s
