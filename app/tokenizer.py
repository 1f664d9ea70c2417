"""The one tokeniser path: index time, query time and training time all come here.

Text is NFKC-normalised and lower-cased, split by SudachiPy (mode C, core dictionary),
and each morpheme is replaced by its lower-cased *normalised form* (so "ｽﾏﾎ" and
"スマホ" agree, and English loan words such as "nike" map to "ナイキ"). Whitespace and
punctuation morphemes are dropped.

Token ids are a stable hash of the token into ``TOKEN_BUCKETS`` buckets; id 0 is
padding, so no vocabulary has to be kept in sync between index, service and trainer.
"""

from __future__ import annotations

import hashlib
import threading
import unicodedata
from functools import lru_cache

from sudachipy import Dictionary, SplitMode

SUDACHI_MODE = "C"
TOKEN_BUCKETS = 1 << 15
MAX_TITLE_TOKENS = 24
MAX_QUERY_TOKENS = 16
_DROPPED_POS = frozenset({"空白", "補助記号"})

_local = threading.local()


def _tokenizer():
    # Sudachi tokenizers are not thread-safe: one per thread.
    tok = getattr(_local, "tokenizer", None)
    if tok is None:
        tok = Dictionary(dict="core").tokenizer(mode=getattr(SplitMode, SUDACHI_MODE))
        _local.tokenizer = tok
    return tok


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def tokenize(text: str) -> list[str]:
    """Normalised tokens of ``text``, in order."""
    norm = normalize(text)
    if not norm.strip():
        return []
    return [
        m.normalized_form().lower()
        for m in _tokenizer().tokenize(norm)
        if m.part_of_speech()[0] not in _DROPPED_POS
    ]


def token_id(token: str) -> int:
    """Stable bucket id in [1, TOKEN_BUCKETS) for a token (0 is padding)."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (TOKEN_BUCKETS - 1) + 1


def token_ids(tokens: list[str], limit: int) -> list[int]:
    return [token_id(t) for t in tokens[:limit]]


@lru_cache(maxsize=65536)
def tokenize_query(text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Tokens and token ids of a query; cached because head queries repeat."""
    tokens = tuple(tokenize(text))
    return tokens, tuple(token_ids(list(tokens), MAX_QUERY_TOKENS))


def spec() -> dict:
    """What makes token ids reproducible; part of the feature-spec hash."""
    return {
        "sudachi_mode": SUDACHI_MODE,
        "dictionary": "core",
        "normalisation": "NFKC+lower, normalized_form().lower(), drop 空白/補助記号",
        "hash": "blake2b-64 little-endian mod (buckets-1) + 1",
        "buckets": TOKEN_BUCKETS,
        "max_title_tokens": MAX_TITLE_TOKENS,
        "max_query_tokens": MAX_QUERY_TOKENS,
    }
