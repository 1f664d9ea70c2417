"""Image-quality labels for listing photos from a vision language model.

Each photo goes, with a chain-of-thought aesthetics prompt, to an OpenAI-compatible
``POST {base_url}/chat/completions`` endpoint (URL, model and key from :class:`LabelConfig`,
e.g. :meth:`LabelConfig.from_env`). The reply is parsed and validated into a
:class:`Label`; every image gets one, failures included, with its outcome:

- ``ok``: a valid answer (JSON object, possibly in a ```json fence or with text around it).
- ``malformed``: no JSON object, invalid JSON, or fields of the wrong type or out of range.
  Retried: models are stochastic and the next sample may be valid.
- ``refused``: the model declined (``finish_reason == "content_filter"``, a ``refusal``
  field in the message, or no JSON and text such as "I can't" or "sorry"). Not retried.
- ``http_error``: connection errors, timeouts, 429 and 5xx are retried with exponential
  backoff; other statuses (400, 401, 404, ...) are not.

Only ``ok`` answers are cached, in an append-only JSON-lines file keyed by the sha256 of
the image bytes, the model and the prompt version; a hit calls nothing. Tokens and cost
come from the response ``usage`` and the configured prices, summed over all attempts.

Tested only against a local stand-in server (``tests/test_image_labels.py``), which replays
scripted replies: no language model was reachable when this was written, so the prompt's
effect on a real model's answers is unmeasured.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_args

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

Outcome = Literal["ok", "malformed", "refused", "http_error"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


class Prompt(NamedTuple):
    """The system and user text sent with every photo."""

    system: str
    user: str


PROMPTS: dict[str, Prompt] = {
    "v1": Prompt(
        system=(
            "You are a meticulous photo editor for a second-hand marketplace. You judge how "
            "well a listing photo shows the item for sale to a buyer. Judge the photograph "
            "only: not the item's value, style or brand."
        ),
        user=(
            "Assess the image quality of this listing photo. Think step by step and write "
            "your reasoning before you score:\n"
            "1. Sharpness and focus: is the item in focus, or blurred by camera shake, motion "
            "or missed focus?\n"
            "2. Exposure and lighting: too dark, blown-out highlights, harsh shadows, a strong "
            "colour cast?\n"
            "3. Framing and crop: is the whole item in frame, large enough and roughly "
            "centred, not cut off or badly tilted?\n"
            "4. Background: plain and tidy, or cluttered and distracting?\n"
            "5. Noise and compression: grain, JPEG blocks, smearing, heavy filters, "
            "watermarks or overlaid text?\n"
            "6. Is the item clearly shown, so that a buyer can tell what it is and what "
            "condition it is in?\n\n"
            'Scores are integers from 1 (very poor) to 5 (excellent): "sharpness" is step 1, '
            '"exposure" step 2, "framing" step 3, "background" step 4; steps 5 and 6 weigh '
            'on "overall". "quality_class" is "poor" (a buyer would skip it; it needs '
            'retaking), "fair" (usable, with visible flaws) or "good" (clear, well lit, well '
            "framed).\n\n"
            "Answer ONLY with one JSON object, no other text, in exactly this form:\n"
            '{"reasoning": "<your step-by-step reasoning, brief>", "scores": {"sharpness": '
            '<1-5>, "exposure": <1-5>, "framing": <1-5>, "background": <1-5>}, "overall": '
            '<1-5>, "quality_class": "poor" | "fair" | "good"}'
        ),
    ),
}

Score = Annotated[int, Field(ge=1, le=5)]


class Scores(BaseModel):
    """Per-aspect scores, integers 1-5."""

    model_config = ConfigDict(strict=True)

    sharpness: Score
    exposure: Score
    framing: Score
    background: Score


class Answer(BaseModel):
    """A valid model answer. Strict types: ``4.0`` or ``"4"`` is not a score."""

    model_config = ConfigDict(strict=True)

    reasoning: str
    scores: Scores
    overall: Score
    quality_class: Literal["poor", "fair", "good"]


@dataclass
class LabelConfig:
    """Endpoint, model, retries, cache and prices for one labelling run.

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://127.0.0.1:8080/v1``).
    ``max_retries`` counts retries after the first attempt; the n-th retry waits
    ``backoff_s * 2**(n-1)`` seconds. ``cache_path`` ``None`` disables the cache. Prices
    are per 1,000 tokens. ``prompt_version`` names one of :data:`PROMPTS`.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_s: float = 0.5
    cache_path: Path | None = None
    price_per_1k_input_tokens: float = 0.0
    price_per_1k_output_tokens: float = 0.0
    prompt_version: str = "v1"

    def __post_init__(self) -> None:
        if self.prompt_version not in PROMPTS:
            raise ValueError(
                f"unknown prompt_version {self.prompt_version!r}; known: {sorted(PROMPTS)}"
            )
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")

    @classmethod
    def from_env(cls, **overrides: Any) -> LabelConfig:
        """A config from ``BESTMATCH_LLM_URL``, ``BESTMATCH_LLM_MODEL``,
        ``BESTMATCH_LLM_API_KEY`` and the prices per 1k tokens ``BESTMATCH_LLM_PRICE_IN``
        and ``BESTMATCH_LLM_PRICE_OUT``; keyword arguments override them and set the rest.
        """
        values: dict[str, Any] = {}
        for name, var in (
            ("base_url", "BESTMATCH_LLM_URL"),
            ("model", "BESTMATCH_LLM_MODEL"),
            ("api_key", "BESTMATCH_LLM_API_KEY"),
        ):
            if os.environ.get(var):
                values[name] = os.environ[var]
        for name, var in (
            ("price_per_1k_input_tokens", "BESTMATCH_LLM_PRICE_IN"),
            ("price_per_1k_output_tokens", "BESTMATCH_LLM_PRICE_OUT"),
        ):
            if os.environ.get(var):
                values[name] = float(os.environ[var])
        values.update(overrides)
        for name, var in (("base_url", "BESTMATCH_LLM_URL"), ("model", "BESTMATCH_LLM_MODEL")):
            if name not in values:
                raise ValueError(f"{var} is not set")
        return cls(**values)


@dataclass
class Label:
    """The result for one image. Answer fields are ``None`` unless ``outcome == "ok"``.

    ``attempts``, tokens and cost count every call made for this image (0 for a cache hit);
    ``error`` describes the last failed attempt.
    """

    image_id: str
    outcome: Outcome
    overall: int | None = None
    quality_class: str | None = None
    scores: dict[str, int] | None = None
    reasoning: str | None = None
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    error: str | None = None
    cached: bool = False

    @classmethod
    def from_answer(cls, image_id: str, answer: Answer, **kwargs: Any) -> Label:
        return cls(
            image_id=image_id,
            outcome="ok",
            overall=answer.overall,
            quality_class=answer.quality_class,
            scores=answer.scores.model_dump(),
            reasoning=answer.reasoning,
            **kwargs,
        )


@dataclass
class LabelRun:
    """The labels of one run, in input order, and the cache lines it could not read."""

    labels: list[Label] = field(default_factory=list)
    cache_lines_skipped: int = 0

    @property
    def summary(self) -> dict[str, int | float]:
        """Counts per outcome, cache hits, calls made, tokens and total cost."""
        counts = Counter(label.outcome for label in self.labels)
        input_tokens = sum(label.input_tokens for label in self.labels)
        output_tokens = sum(label.output_tokens for label in self.labels)
        return {
            "labels": len(self.labels),
            **{outcome: counts[outcome] for outcome in OUTCOMES},
            "cache_hits": sum(label.cached for label in self.labels),
            "calls": sum(label.attempts for label in self.labels),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "cost": sum(label.cost for label in self.labels),
            "cache_lines_skipped": self.cache_lines_skipped,
        }


@dataclass
class _Attempt:
    """One call's result; ``retryable`` says whether another call may do better."""

    outcome: Outcome
    retryable: bool
    answer: Answer | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


_REFUSAL = re.compile(
    r"\b(?:I\s+can(?:no|'|’)t|I(?:\s+am|'m|’m)\s+(?:unable|not able)|I\s+won(?:'|’)t|sorry)\b",
    re.IGNORECASE,
)


def cache_key(image: bytes, config: LabelConfig) -> str:
    """sha256 of the image bytes, the model and the prompt version."""
    digest = hashlib.sha256(image)
    for part in (config.model, config.prompt_version):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


def request_body(image: bytes, config: LabelConfig) -> dict[str, Any]:
    """The chat-completions request for one JPEG photo."""
    prompt = PROMPTS[config.prompt_version]
    data_url = "data:image/jpeg;base64," + base64.b64encode(image).decode("ascii")
    return {
        "model": config.model,
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": prompt.system},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": prompt.user},
                    {"type": "image_url", "image_url": {"url": data_url}},
                ],
            },
        ],
    }


def parse_content(text: str) -> tuple[Outcome, Answer | None, str | None]:
    """Outcome, answer and error for a reply's text: the outermost ``{...}`` is the answer."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        if _REFUSAL.search(text):
            return "refused", None, f"refusal text: {text[:200]!r}"
        return "malformed", None, f"no JSON object in {text[:200]!r}"
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        return "malformed", None, f"invalid JSON: {exc}"
    try:
        return "ok", Answer.model_validate(obj), None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'answer'}: {err['msg']}" for err in exc.errors()
        )
        return "malformed", None, f"invalid answer: {problems}"


def _interpret(body: Any) -> _Attempt:
    """An attempt from a 2xx response's decoded JSON body."""
    try:
        choice = body["choices"][0]
        finish_reason = choice.get("finish_reason")
        refusal = choice["message"].get("refusal")
        content = choice["message"].get("content")
        usage = body.get("usage") or {}
        tokens = {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        }
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        return _Attempt("malformed", True, error=f"unexpected response body: {exc!r}")
    if finish_reason == "content_filter":
        return _Attempt("refused", False, error="finish_reason=content_filter", **tokens)
    if refusal:
        return _Attempt("refused", False, error=f"refusal: {refusal}", **tokens)
    if not isinstance(content, str) or not content.strip():
        return _Attempt(
            "malformed", True, error=f"empty content (finish_reason={finish_reason})", **tokens
        )
    outcome, answer, error = parse_content(content)
    if error and finish_reason not in (None, "stop"):
        error += f" (finish_reason={finish_reason})"
    return _Attempt(outcome, outcome == "malformed", answer, error, **tokens)


def _call(client: httpx.Client, body: dict[str, Any], config: LabelConfig) -> _Attempt:
    """One POST to the endpoint."""
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    url = config.base_url.rstrip("/") + "/chat/completions"
    try:
        response = client.post(url, json=body, headers=headers, timeout=config.timeout_s)
    except httpx.TransportError as exc:
        return _Attempt("http_error", True, error=f"{type(exc).__name__}: {exc}")
    if not response.is_success:
        status = response.status_code
        return _Attempt(
            "http_error",
            status == 429 or status >= 500,
            error=f"HTTP {status}: {response.text[:200]}",
        )
    try:
        decoded = response.json()
    except ValueError as exc:
        return _Attempt("malformed", True, error=f"response is not JSON: {exc}")
    return _interpret(decoded)


def _label_one(
    image_id: str, image: bytes, config: LabelConfig, client: httpx.Client
) -> tuple[Label, Answer | None]:
    """Call, retrying as the outcome allows; the label and, when ``ok``, the answer."""
    body = request_body(image, config)
    input_tokens = output_tokens = 0
    for attempt in range(1, config.max_retries + 2):
        if attempt > 1:
            time.sleep(config.backoff_s * 2 ** (attempt - 2))
        result = _call(client, body, config)
        input_tokens += result.input_tokens
        output_tokens += result.output_tokens
        if not result.retryable:
            break
    usage = {
        "attempts": attempt,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost": (
            input_tokens * config.price_per_1k_input_tokens
            + output_tokens * config.price_per_1k_output_tokens
        )
        / 1000,
    }
    if result.answer is not None:
        return Label.from_answer(image_id, result.answer, **usage), result.answer
    log.warning(
        "image %s: %s after %d attempt(s): %s", image_id, result.outcome, attempt, result.error
    )
    return Label(image_id, result.outcome, error=result.error, **usage), None


def _load_cache(path: Path | None) -> tuple[dict[str, Answer], int]:
    """Cached answers by key, and the number of unreadable lines (e.g. a torn last write)."""
    answers: dict[str, Answer] = {}
    skipped = 0
    if path is None or not path.exists():
        return answers, skipped
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            answers[record["key"]] = Answer.model_validate(record["answer"])
        except (json.JSONDecodeError, KeyError, TypeError, ValidationError):
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d unreadable cache line(s)", path, skipped)
    return answers, skipped


def label_images(
    items: Iterable[tuple[str, bytes]],
    config: LabelConfig,
    client: httpx.Client | None = None,
) -> LabelRun:
    """Label each ``(image_id, jpeg_bytes)``: one :class:`Label` per item, in order.

    ``client`` defaults to a new :class:`httpx.Client`, closed at the end; a given one is
    left open. ``ok`` answers are appended to ``config.cache_path`` as they arrive.
    """
    cache, skipped = _load_cache(config.cache_path)
    if config.cache_path is not None:
        config.cache_path.parent.mkdir(parents=True, exist_ok=True)
    run = LabelRun(cache_lines_skipped=skipped)
    with (
        httpx.Client(timeout=config.timeout_s) if client is None else contextlib.nullcontext(client)
    ) as http:
        for image_id, image in items:
            key = cache_key(image, config)
            if key in cache:
                run.labels.append(Label.from_answer(image_id, cache[key], cached=True))
                continue
            label, answer = _label_one(image_id, image, config, http)
            run.labels.append(label)
            if answer is None:
                continue
            cache[key] = answer
            if config.cache_path is not None:
                record = {
                    "key": key,
                    "image_id": image_id,
                    "model": config.model,
                    "prompt_version": config.prompt_version,
                    "answer": answer.model_dump(),
                }
                with config.cache_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return run
