"""training.image_score.llm_labels against a local stand-in OpenAI-compatible server.

The stand-in (stdlib HTTP server on loopback, background thread) answers each
``POST /v1/chat/completions`` with the next scripted reply and records what it got. No
language model is involved: these tests check the client's protocol, parsing, retries,
cache and cost accounting, not the prompt's effect on a real model.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from training.image_score.llm_labels import PROMPTS, LabelConfig, cache_key, label_images

GOOD = {
    "reasoning": "1. Sharp. 2. Even light. 3. Item centred. 4. Plain wall. 5. Clean. 6. Clear.",
    "scores": {"sharpness": 5, "exposure": 4, "framing": 4, "background": 3},
    "overall": 4,
    "quality_class": "good",
}


def jpeg(seed: int, size: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def chat(
    content: str | None,
    *,
    finish_reason: str = "stop",
    refusal: str | None = None,
    usage: tuple[int, int] | None = (100, 20),
) -> tuple[int, dict[str, Any]]:
    """A 200 chat-completions reply."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if refusal is not None:
        message["refusal"] = refusal
    body: dict[str, Any] = {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return 200, body


def good(**overrides: Any) -> tuple[int, dict[str, Any]]:
    return chat(json.dumps({**GOOD, **overrides}))


def status(code: int) -> tuple[int, dict[str, Any]]:
    return code, {"error": {"message": f"stand-in {code}", "type": "stand_in"}}


class StandIn:
    """Scripted replies, in order, and the requests received (with arrival times)."""

    def __init__(self) -> None:
        self.script: deque[tuple[int, dict[str, Any]]] = deque()
        self.requests: list[dict[str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                stand_in.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "json": json.loads(raw),
                        "t": time.monotonic(),
                    }
                )
                code, body = stand_in.script.popleft() if stand_in.script else status(599)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def push(self, *replies: tuple[int, dict[str, Any]]) -> None:
        self.script.extend(replies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server():
    stand_in = StandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture
def stand_in(server: StandIn) -> StandIn:
    server.script.clear()
    server.requests.clear()
    yield server
    assert not server.script, "scripted replies left unused"


@pytest.fixture
def config(stand_in: StandIn, tmp_path) -> LabelConfig:
    return LabelConfig(
        base_url=stand_in.base_url,
        model="stand-in-vision",
        api_key="sk-stand-in",
        timeout_s=5,
        max_retries=3,
        backoff_s=0.001,
        cache_path=tmp_path / "labels.jsonl",
        price_per_1k_input_tokens=0.5,
        price_per_1k_output_tokens=1.5,
    )


def test_good_answer_and_the_request_it_came_from(stand_in, config):
    image = jpeg(0)
    stand_in.push(good())
    [label] = label_images([("img-1", image)], config).labels

    assert label.outcome == "ok" and label.error is None and not label.cached
    assert label.overall == 4 and label.quality_class == "good"
    assert label.scores == GOOD["scores"] and label.reasoning == GOOD["reasoning"]
    assert label.attempts == 1

    [request] = stand_in.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-stand-in"
    body = request["json"]
    assert body["model"] == "stand-in-vision"
    assert body["temperature"] == 0
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert system == {"role": "system", "content": PROMPTS["v1"].system}
    text, picture = user["content"]
    assert user["role"] == "user"
    assert text == {"type": "text", "text": PROMPTS["v1"].user}
    assert "step by step" in text["text"] and '"quality_class"' in text["text"]
    for aspect in ("Sharpness", "Exposure", "Framing", "Background", "Noise", "clearly shown"):
        assert aspect in text["text"]
    assert picture["type"] == "image_url"
    prefix = "data:image/jpeg;base64,"
    assert picture["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(picture["image_url"]["url"][len(prefix) :]) == image


def test_no_key_no_authorization_header(stand_in, config):
    config.api_key = None
    stand_in.push(good())
    assert label_images([("a", jpeg(0))], config).labels[0].outcome == "ok"
    assert "Authorization" not in stand_in.requests[0]["headers"]


@pytest.mark.parametrize(
    "content",
    [
        "```json\n" + json.dumps(GOOD) + "\n```",
        "Here is my assessment:\n" + json.dumps(GOOD, indent=2) + "\nHope this helps.",
    ],
    ids=["fenced", "text-around"],
)
def test_wrapped_json_is_extracted(stand_in, config, content):
    stand_in.push(chat(content))
    [label] = label_images([("a", jpeg(0))], config).labels
    assert label.outcome == "ok" and label.overall == 4 and label.attempts == 1


def test_malformed_then_good_is_retried(stand_in, config):
    stand_in.push(chat("The photo looks quite sharp overall."), good())
    [label] = label_images([("a", jpeg(0))], config).labels
    assert label.outcome == "ok" and label.attempts == 2
    assert len(stand_in.requests) == 2
    assert label.input_tokens == 200 and label.output_tokens == 40  # both calls are billed


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (json.dumps({**GOOD, "overall": 9}), "overall"),
        (json.dumps({**GOOD, "quality_class": "great"}), "quality_class"),
        (json.dumps({**GOOD, "scores": {**GOOD["scores"], "sharpness": 0}}), "sharpness"),
        (json.dumps({**GOOD, "scores": {"sharpness": 3}}), "exposure"),
        (json.dumps({**GOOD, "overall": "4"}), "overall"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "reasoning"}), "reasoning"),
        ('{"reasoning": "cut off", "scores": {', "no JSON object"),
        ('{"reasoning": "x", "overall": 4,}', "invalid JSON"),
    ],
    ids=[
        "overall-9",
        "class",
        "score-0",
        "missing-score",
        "string",
        "no-reasoning",
        "open",
        "bad-json",
    ],
)
def test_invalid_answer_is_malformed_after_all_retries(stand_in, config, content, problem):
    stand_in.push(*[chat(content)] * 4)
    [label] = label_images([("a", jpeg(0))], config).labels
    assert label.outcome == "malformed" and label.attempts == 4 == len(stand_in.requests)
    assert problem in label.error
    assert label.overall is None and label.scores is None
    assert not config.cache_path.exists()  # failures are not cached


def test_truncated_answer_names_the_finish_reason(stand_in, config):
    config.max_retries = 0
    stand_in.push(chat('{"reasoning": "The item is', finish_reason="length"))
    [label] = label_images([("a", jpeg(0))], config).labels
    assert label.outcome == "malformed" and "finish_reason=length" in label.error


@pytest.mark.parametrize(
    "reply",
    [
        chat(None, finish_reason="content_filter"),
        chat(None, refusal="I can't help with that request."),
        chat("I'm sorry, but I can't assess this image."),
        chat("I cannot evaluate photos of people."),
    ],
    ids=["content-filter", "refusal-field", "sorry-text", "cannot-text"],
)
def test_refusal_is_not_retried(stand_in, config, reply):
    stand_in.push(reply)
    [label] = label_images([("a", jpeg(0))], config).labels
    assert label.outcome == "refused" and label.attempts == 1 == len(stand_in.requests)
    assert label.error and label.overall is None
    assert label.input_tokens == 100  # a refusal is still billed


@pytest.mark.parametrize("code", [500, 503, 429])
def test_server_error_then_success_backs_off(stand_in, config, code):
    config.backoff_s = 0.02
    stand_in.push(status(code), good())
    [label] = label_images([("a", jpeg(0))], config).labels
    assert label.outcome == "ok" and label.attempts == 2
    first, second = stand_in.requests
    assert second["t"] - first["t"] >= 0.02


def test_server_errors_exhaust_retries_with_exponential_backoff(stand_in, config):
    config.max_retries, config.backoff_s = 2, 0.02
    stand_in.push(*[status(502)] * 3)
    [label] = label_images([("a", jpeg(0))], config).labels
    assert label.outcome == "http_error" and label.attempts == 3
    assert "HTTP 502" in label.error
    t = [request["t"] for request in stand_in.requests]
    assert t[1] - t[0] >= 0.02 and t[2] - t[1] >= 0.04


@pytest.mark.parametrize("code", [400, 401, 404])
def test_client_error_is_not_retried(stand_in, config, code):
    stand_in.push(status(code))
    [label] = label_images([("a", jpeg(0))], config).labels
    assert label.outcome == "http_error" and label.attempts == 1 == len(stand_in.requests)
    assert f"HTTP {code}" in label.error and f"stand-in {code}" in label.error


def test_connection_refused_is_retried_then_recorded(config):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config.base_url, config.max_retries = f"http://127.0.0.1:{port}/v1", 1
    [label] = label_images([("a", jpeg(0))], config).labels
    assert label.outcome == "http_error" and label.attempts == 2
    assert "ConnectError" in label.error


def test_cache_hit_makes_no_call(stand_in, config):
    images = [("a", jpeg(0)), ("b", jpeg(1))]
    stand_in.push(good(), good(overall=2, quality_class="poor"))
    first = label_images(images, config)
    assert [label.cached for label in first.labels] == [False, False]
    assert len(config.cache_path.read_text().splitlines()) == 2
    calls = len(stand_in.requests)

    again = label_images(images, LabelConfig(**vars(config)))  # a fresh run, same cache file
    assert len(stand_in.requests) == calls
    assert [label.cached for label in again.labels] == [True, True]
    assert [label.overall for label in again.labels] == [4, 2]
    assert again.labels[1].scores == first.labels[1].scores
    assert all(label.attempts == 0 and label.cost == 0 for label in again.labels)
    assert again.summary["cache_hits"] == 2 and again.summary["calls"] == 0

    record = json.loads(config.cache_path.read_text().splitlines()[0])
    assert record["key"] == cache_key(images[0][1], config)
    assert record["model"] == "stand-in-vision" and record["prompt_version"] == "v1"


def test_cache_key_includes_the_model(stand_in, config):
    stand_in.push(good(), good())
    label_images([("a", jpeg(0))], config)
    config.model = "another-model"
    [label] = label_images([("a", jpeg(0))], config).labels
    assert not label.cached and len(stand_in.requests) == 2
    assert stand_in.requests[1]["json"]["model"] == "another-model"


def test_same_image_twice_in_one_run_is_called_once(stand_in, config):
    stand_in.push(good())
    labels = label_images([("a", jpeg(0)), ("a-copy", jpeg(0))], config).labels
    assert [label.cached for label in labels] == [False, True]
    assert labels[1].image_id == "a-copy" and len(stand_in.requests) == 1


def test_failures_are_not_cached(stand_in, config):
    config.max_retries = 0
    stand_in.push(chat("Sorry, I can't do that."), good())
    assert label_images([("a", jpeg(0))], config).labels[0].outcome == "refused"
    [label] = label_images([("a", jpeg(0))], config).labels
    assert label.outcome == "ok" and not label.cached


def test_unreadable_cache_lines_are_skipped_and_counted(stand_in, config):
    stand_in.push(good())
    label_images([("a", jpeg(0))], config)
    with config.cache_path.open("a") as fh:
        fh.write('{"key": "torn wri\n{"key": "k", "answer": {"overall": 4}}\n')
    run = label_images([("a", jpeg(0))], config)
    assert run.labels[0].cached and run.cache_lines_skipped == 2
    assert run.summary["cache_lines_skipped"] == 2


def test_cost_from_usage_and_prices(stand_in, config):
    stand_in.push(
        chat(json.dumps(GOOD), usage=(1000, 200)),
        chat(json.dumps(GOOD), usage=None),  # no usage reported: no tokens, no cost
    )
    labels = label_images([("a", jpeg(0)), ("b", jpeg(1))], config).labels
    assert (labels[0].input_tokens, labels[0].output_tokens) == (1000, 200)
    assert labels[0].cost == pytest.approx(1000 / 1000 * 0.5 + 200 / 1000 * 1.5)
    assert (labels[1].input_tokens, labels[1].output_tokens, labels[1].cost) == (0, 0, 0)


def test_summary_counts_every_outcome(stand_in, config):
    config.max_retries = 1
    stand_in.push(
        good(),  # a: ok
        chat("no json here"),  # b: malformed, retried once
        chat("still none"),
        chat(None, finish_reason="content_filter"),  # c: refused
        status(400),  # d: http_error
    )
    items = [("a", jpeg(0)), ("b", jpeg(1)), ("c", jpeg(2)), ("d", jpeg(3)), ("a2", jpeg(0))]
    run = label_images(iter(items), config)
    assert [label.image_id for label in run.labels] == ["a", "b", "c", "d", "a2"]
    assert [label.outcome for label in run.labels] == [
        "ok",
        "malformed",
        "refused",
        "http_error",
        "ok",
    ]
    summary = run.summary
    assert summary["labels"] == 5
    assert (summary["ok"], summary["malformed"], summary["refused"], summary["http_error"]) == (
        2,
        1,
        1,
        1,
    )
    assert summary["cache_hits"] == 1 and summary["calls"] == 5
    assert summary["input_tokens"] == 400 and summary["output_tokens"] == 80
    assert summary["total_tokens"] == 480
    assert summary["cost"] == pytest.approx(400 / 1000 * 0.5 + 80 / 1000 * 1.5)


def test_given_client_is_used_and_left_open(stand_in, config):
    config.cache_path = None
    stand_in.push(good())
    with httpx.Client(headers={"X-Trace": "t-1"}) as client:
        assert label_images([("a", jpeg(0))], config, client=client).labels[0].outcome == "ok"
        assert not client.is_closed
    assert stand_in.requests[0]["headers"]["X-Trace"] == "t-1"


def test_config_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BESTMATCH_LLM_URL", "http://127.0.0.1:8080/v1")
    monkeypatch.setenv("BESTMATCH_LLM_MODEL", "some-vlm")
    monkeypatch.setenv("BESTMATCH_LLM_API_KEY", "sk-env")
    monkeypatch.setenv("BESTMATCH_LLM_PRICE_IN", "0.15")
    monkeypatch.setenv("BESTMATCH_LLM_PRICE_OUT", "0.6")
    config = LabelConfig.from_env(cache_path=tmp_path / "c.jsonl", max_retries=1)
    assert (config.base_url, config.model, config.api_key) == (
        "http://127.0.0.1:8080/v1",
        "some-vlm",
        "sk-env",
    )
    assert (config.price_per_1k_input_tokens, config.price_per_1k_output_tokens) == (0.15, 0.6)
    assert config.cache_path == tmp_path / "c.jsonl" and config.max_retries == 1
    assert config.timeout_s == 30 and config.backoff_s == 0.5 and config.prompt_version == "v1"

    monkeypatch.delenv("BESTMATCH_LLM_MODEL")
    with pytest.raises(ValueError, match="BESTMATCH_LLM_MODEL"):
        LabelConfig.from_env()


def test_unknown_prompt_version_is_refused():
    with pytest.raises(ValueError, match="prompt_version"):
        LabelConfig(base_url="http://127.0.0.1:1/v1", model="m", prompt_version="v0")
