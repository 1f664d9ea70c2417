"""Simulated queries: what a searcher wants (the intent), the words they type, and the
true relevance of every listing to it.

Intents range from broad (a category, a brand) to narrow (a product in a size, in a
condition, or an accessory for a product). Query popularity is Zipf-like over a random
order with broad intents weighted up, so a few head queries carry much of the traffic
and a long tail is seen once or twice. Queries are typed in Japanese or English
independently of the listings' language.

True relevance (the evaluation ground truth, never a training input) is a grade 0..4
from two parts: how well the listing matches the intent (0 wrong thing, 0.5 related,
e.g. an accessory or the same brand's other product, 1..3 right thing with size /
condition mismatches lowering it), scaled by the listing's appeal (price against its
market price, photo quality, condition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.simulator.catalog import CATEGORIES, CONDITION_WORDS, PRODUCTS, Catalog

GRADE_EDGES = (0.12, 0.3, 0.5, 0.7)  # utility -> grade 0..4
KINDS = ("category", "brand", "brand_category", "product", "product_size",
         "product_condition", "accessory")
KIND_P = np.array([0.08, 0.14, 0.14, 0.32, 0.16, 0.08, 0.08])
KIND_POPULARITY = np.array([4.0, 4.0, 2.0, 2.0, 1.0, 1.0, 1.0])  # broad intents are asked more


@dataclass(frozen=True)
class Intent:
    kind: str
    category: int
    brand: str = ""  # English brand name; "" = any
    product: int = -1  # index into PRODUCTS; -1 = any
    size: int = -1
    accessory: int = -1
    condition: int = -1  # best acceptable condition index (0 new, 1 like new); -1 = any


@dataclass
class QuerySet:
    texts: list[str]
    intents: list[Intent]
    popularity: np.ndarray  # sums to 1

    def __len__(self) -> int:
        return len(self.texts)


def _sample_intent(rng: np.random.Generator) -> Intent:
    kind = KINDS[rng.choice(len(KINDS), p=KIND_P)]
    k = int(rng.integers(len(PRODUCTS)))
    c, prod = PRODUCTS[k]
    cat = CATEGORIES[c]
    if kind == "category":
        return Intent(kind, c)
    if kind in ("brand", "brand_category"):
        return Intent(kind, c, brand=prod.brand_en)
    if kind == "product_size":
        return Intent(kind, c, prod.brand_en, k, size=int(rng.integers(len(cat.sizes))))
    if kind == "product_condition":
        return Intent(kind, c, prod.brand_en, k, condition=int(rng.integers(2)))
    if kind == "accessory":
        return Intent(kind, c, prod.brand_en, k, accessory=int(rng.integers(2)))
    return Intent(kind, c, prod.brand_en, k)


def query_text(intent: Intent, english: bool, with_brand: bool) -> str:
    cat = CATEGORIES[intent.category]
    lang = 0 if english else 1
    words: list[str] = []
    if intent.product >= 0:
        prod = PRODUCTS[intent.product][1]
        if with_brand:
            words.append(prod.brand_en if english else prod.brand_ja)
        words.append(prod.name_en if english else prod.name_ja)
    elif intent.brand:
        prod = next(p for c, p in PRODUCTS if c == intent.category and p.brand_en == intent.brand)
        words.append(prod.brand_en if english else prod.brand_ja)
    if intent.kind in ("category", "brand_category"):
        words.append(cat.en if english else cat.ja)
    if intent.size >= 0:
        words.append(cat.sizes[intent.size])
    if intent.condition >= 0:
        ja, en = tuple(CONDITION_WORDS.values())[intent.condition]
        words.append(en if english else ja)
    if intent.accessory >= 0:
        words.append(cat.accessories[intent.accessory][lang])
    text = " ".join(words)
    return text.lower() if english and with_brand else text


def generate_queries(n: int, seed: int = 0, zipf: float = 1.05) -> QuerySet:
    """``n`` distinct queries with their intents and a head / long-tail popularity."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    intents: list[Intent] = []
    seen: set[str] = set()
    attempts = 0
    while len(texts) < n and attempts < 50 * n:
        attempts += 1
        intent = _sample_intent(rng)
        text = query_text(intent, bool(rng.random() < 0.4), bool(rng.random() < 0.5))
        if text not in seen:
            seen.add(text)
            texts.append(text)
            intents.append(intent)
    order = rng.permutation(len(texts))
    base = 1.0 / (order + 1.0) ** zipf
    weight = base * KIND_POPULARITY[[KINDS.index(i.kind) for i in intents]]
    return QuerySet(texts, intents, weight / weight.sum())


def match_level(intent: Intent, cat: Catalog, items: np.ndarray) -> np.ndarray:
    """0 (wrong thing) .. 3 (exactly what was asked for) for listings ``items``."""
    same_cat = cat.category[items] == intent.category
    brand = np.array([PRODUCTS[k][1].brand_en for k in cat.product[items]])
    is_acc = cat.accessory[items] >= 0
    m = np.zeros(len(items))
    if intent.kind == "category":
        m[same_cat] = 3.0
    elif intent.kind == "brand":  # a brand spans categories (Sony: phones and games)
        m[same_cat] = 0.5
        m[brand == intent.brand] = 3.0
    elif intent.kind == "brand_category":
        m[same_cat] = 1.0
        m[same_cat & (brand == intent.brand)] = 3.0
    elif intent.kind == "accessory":
        same_prod = cat.product[items] == intent.product
        m[same_prod] = 0.5
        m[same_prod & (cat.accessory[items] == intent.accessory)] = 3.0
        m[same_prod & is_acc & (cat.accessory[items] != intent.accessory)] = 1.0
        return m
    else:
        m[same_cat & (brand == intent.brand)] = 1.0
        same_prod = cat.product[items] == intent.product
        m[same_prod] = 3.0
        if intent.size >= 0:
            m[same_prod & (cat.size[items] != intent.size)] = 2.0
        if intent.condition >= 0:
            m[same_prod & (cat.condition[items] > intent.condition + 1)] = 1.0
    m[is_acc & (m > 0)] = 0.5  # an accessory is not the thing itself
    return m


def true_relevance(
    intent: Intent, cat: Catalog, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(utility in [0, 1], grade 0..4) of listings ``items`` for ``intent``."""
    m = match_level(intent, cat, items)
    appeal = (0.5 * cat.price_appeal(items) + 0.3 * cat.quality[items]
              + 0.2 * (1.0 - cat.condition[items] / 4.0))
    utility = (m / 3.0) * (0.35 + 0.65 * appeal)
    grade = np.digitize(utility, GRADE_EDGES)
    grade[m == 0] = 0
    return utility, grade.astype(np.int8)
