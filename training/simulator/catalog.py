"""The simulated catalog: listings in Japanese and English with latent attributes.

Every listing is one product of one brand in one category (or an accessory for it,
e.g. a case for a phone), in a size and a condition, at a log-normal price around the
product's market price for that condition (0.2% at the 9,999,999 maximum), listed at
a time skewed to recent days with a long tail. Each has a latent photo quality; the
index only sees ``image_score``, a noisy reading of it (what an image model would
give). Generation is vectorised: one million listings take about 4 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from app.listings import CONDITIONS, PRICE_MAX

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Product:
    brand_en: str
    brand_ja: str
    name_en: str
    name_ja: str
    price: float  # market price, new condition (JPY)


@dataclass(frozen=True)
class Category:
    name: str
    en: str
    ja: str
    products: tuple[Product, ...]
    sizes: tuple[str, ...]
    accessories: tuple[tuple[str, str], ...]  # (English, Japanese)


P = Product
CATEGORIES: tuple[Category, ...] = (
    Category("sneakers", "sneakers", "スニーカー", (
        P("Nike", "ナイキ", "Air Max 95", "エアマックス95", 18000),
        P("Nike", "ナイキ", "Air Force 1", "エアフォース1", 14000),
        P("adidas", "アディダス", "Stan Smith", "スタンスミス", 12000),
        P("adidas", "アディダス", "Superstar", "スーパースター", 11000),
        P("New Balance", "ニューバランス", "990v5", "990v5", 26000),
        P("New Balance", "ニューバランス", "574", "574", 9000),
    ), ("25cm", "26cm", "27cm", "28cm"), (("shoelaces", "靴紐"), ("insoles", "インソール"))),
    Category("smartphones", "smartphone", "スマホ", (
        P("Apple", "アップル", "iPhone 15 Pro", "iPhone 15 Pro", 150000),
        P("Apple", "アップル", "iPhone 13", "iPhone 13", 70000),
        P("Google", "グーグル", "Pixel 8", "Pixel 8", 80000),
        P("Sony", "ソニー", "Xperia 10", "エクスペリア10", 45000),
    ), ("128GB", "256GB", "512GB"), (("case", "ケース"), ("screen protector", "保護フィルム"))),
    Category("bags", "bag", "バッグ", (
        P("Louis Vuitton", "ルイヴィトン", "Neverfull", "ネヴァーフル", 160000),
        P("Louis Vuitton", "ルイヴィトン", "Speedy", "スピーディ", 120000),
        P("Coach", "コーチ", "tote bag", "トートバッグ", 30000),
        P("Porter", "ポーター", "backpack", "リュック", 25000),
        P("Porter", "ポーター", "wallet", "財布", 15000),
    ), ("small", "medium", "large"), (("dust bag", "保存袋"), ("strap", "ストラップ"))),
    Category("watches", "watch", "腕時計", (
        P("Casio", "カシオ", "G-Shock", "Gショック", 15000),
        P("Seiko", "セイコー", "Presage", "プレザージュ", 50000),
        P("Seiko", "セイコー", "Prospex", "プロスペックス", 60000),
        P("Citizen", "シチズン", "solar watch", "ソーラー時計", 25000),
    ), ("38mm", "40mm", "42mm"), (("band", "ベルト"), ("box", "箱"))),
    Category("games", "game", "ゲーム", (
        P("Nintendo", "任天堂", "Switch console", "スイッチ本体", 30000),
        P("Nintendo", "任天堂", "Mario Kart", "マリオカート", 5000),
        P("Sony", "ソニー", "PS5 console", "PS5本体", 60000),
        P("Capcom", "カプコン", "Monster Hunter", "モンスターハンター", 5000),
    ), ("standard", "limited edition"), (("controller", "コントローラー"), ("case", "ケース"))),
    Category("books", "book", "本", (
        P("Shueisha", "集英社", "One Piece manga set", "ワンピース 全巻セット", 30000),
        P("Kodansha", "講談社", "novel", "小説", 1500),
        P("Shogakukan", "小学館", "picture book", "絵本", 1800),
        P("Kodansha", "講談社", "art book", "画集", 4000),
    ), ("vol 1-10", "vol 1-50", "single"),
        (("book cover", "ブックカバー"), ("bookmark", "しおり"))),
)
del P
# Flat product table: PRODUCTS[k] = (category index, product).
PRODUCTS: tuple[tuple[int, Product], ...] = tuple(
    (c, p) for c, cat in enumerate(CATEGORIES) for p in cat.products
)
CONDITION_WORDS = {  # (Japanese, English)
    "new": ("新品未使用", "brand new"),
    "like_new": ("美品", "like new"),
    "good": ("目立った傷なし", "good condition"),
    "fair": ("やや傷あり", "some wear"),
    "poor": ("傷や汚れあり", "damaged"),
}
assert tuple(CONDITION_WORDS) == CONDITIONS
CONDITION_P = np.array([0.15, 0.3, 0.3, 0.17, 0.08])
CONDITION_PRICE = np.array([1.0, 0.85, 0.7, 0.55, 0.4])  # share of the new price
ACCESSORY_PRICE = 0.06
ACCESSORY_SHARE = 0.12


@dataclass
class Catalog:
    """Listings as columns (row i = listing i). Latent columns are simulator truth."""

    ids: np.ndarray  # str
    category: np.ndarray  # int: index into CATEGORIES
    product: np.ndarray  # int: index into PRODUCTS
    size: np.ndarray  # int: index into the category's sizes (-1 for accessories)
    accessory: np.ndarray  # int: index into the category's accessories, -1 = the product
    condition: np.ndarray  # int: index into CONDITIONS
    english: np.ndarray  # bool
    price: np.ndarray  # float
    fair_price: np.ndarray  # float: market price for this product and condition (latent)
    created_ms: np.ndarray  # int64 epoch ms
    on_sale: np.ndarray  # bool
    quality: np.ndarray  # latent photo quality in [0, 1]
    image_score: np.ndarray  # what the index sees: noisy quality
    violation_score: np.ndarray
    titles: list[str]
    descriptions: list[str]
    brands: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def price_appeal(self, items: np.ndarray) -> np.ndarray:
        """In (0, 1) for listings ``items``: 0.5 at the market price, higher when cheaper."""
        return 1.0 / (1.0 + (self.price[items] / self.fair_price[items]) ** 2.5)

    def rows(self) -> Iterator[dict]:
        """Listing rows in the shape of :class:`app.listings.Listing`."""
        for i in range(len(self)):
            yield {
                "id": str(self.ids[i]),
                "title": self.titles[i],
                "description": self.descriptions[i],
                "brand": self.brands[i],
                "category": CATEGORIES[self.category[i]].name,
                "condition": CONDITIONS[self.condition[i]],
                "price": float(self.price[i]),
                "created_at": datetime.fromtimestamp(self.created_ms[i] / 1000, UTC).isoformat(),
                "status": "on_sale" if self.on_sale[i] else "sold",
                "image_score": round(float(self.image_score[i]), 4),
                "violation_score": round(float(self.violation_score[i]), 4),
            }


def _texts(cat: Category, prod: Product, size: int, acc: int, cond: int, english: bool,
           with_brand: bool, with_category: bool) -> tuple[str, str]:
    cond_ja, cond_en = CONDITION_WORDS[CONDITIONS[cond]]
    if english:
        brand, name, cat_word, cond_word = prod.brand_en, prod.name_en, cat.en, cond_en
        acc_word = cat.accessories[acc][0] if acc >= 0 else ""
    else:
        brand, name, cat_word, cond_word = prod.brand_ja, prod.name_ja, cat.ja, cond_ja
        acc_word = cat.accessories[acc][1] if acc >= 0 else ""
    size_word = cat.sizes[size] if size >= 0 else ""
    parts = [brand if with_brand else "", name, acc_word or (cat_word if with_category else ""),
             size_word, cond_word]
    title = " ".join(p for p in parts if p)
    if english:
        what = f"{name} {acc_word}".strip()
        description = f"{brand} {what}, {cond_word}. {size_word} Ships in 2 days.".strip()
    else:
        what = f"{name}{'の' + acc_word if acc_word else ''}"
        description = f"{brand}の{what}です。{cond_word}。{size_word} 2日以内に発送します。"
    return title, description


def generate_catalog(n: int, seed: int = 0, now: datetime | None = None,
                     english_share: float = 0.35) -> Catalog:
    """``n`` listings; the same ``seed`` and ``now`` (default: today 00:00 UTC) give the same."""
    rng = np.random.default_rng(seed)
    now = now or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    now_ms = int(now.timestamp() * 1000)
    product = rng.integers(len(PRODUCTS), size=n)
    category = np.array([c for c, _ in PRODUCTS])[product]
    n_sizes = np.array([len(CATEGORIES[c].sizes) for c, _ in PRODUCTS])[product]
    is_acc = rng.random(n) < ACCESSORY_SHARE
    accessory = np.where(is_acc, rng.integers(2, size=n), -1)
    size = np.where(is_acc, -1, (rng.random(n) * n_sizes).astype(int))
    condition = rng.choice(len(CONDITIONS), size=n, p=CONDITION_P)
    english = rng.random(n) < english_share
    new_price = np.array([p.price for _, p in PRODUCTS])[product]
    fair = new_price * CONDITION_PRICE[condition] * np.where(is_acc, ACCESSORY_PRICE, 1.0)
    price = np.round(fair * np.exp(rng.normal(0.0, 0.35, n)), -1).clip(300)
    price[rng.random(n) < 0.002] = PRICE_MAX
    age_days = np.where(rng.random(n) < 0.9, rng.exponential(20.0, n), rng.uniform(60, 1000, n))
    quality = rng.beta(2.0, 2.0, n)
    with_brand = rng.random(n) < 0.8
    with_category = rng.random(n) < 0.6
    titles, descriptions, brands = [], [], []
    for i in range(n):
        c, prod = PRODUCTS[product[i]]
        title, description = _texts(CATEGORIES[c], prod, int(size[i]), int(accessory[i]),
                                    int(condition[i]), bool(english[i]), bool(with_brand[i]),
                                    bool(with_category[i]))
        titles.append(title)
        descriptions.append(description)
        brands.append(prod.brand_en if english[i] else prod.brand_ja)
    return Catalog(
        ids=np.array([f"m{seed}-{i:07d}" for i in range(n)]),
        category=category, product=product, size=size, accessory=accessory,
        condition=condition, english=english, price=price, fair_price=fair,
        created_ms=(now_ms - age_days * DAY_MS).astype(np.int64),
        on_sale=rng.random(n) >= 0.15,
        quality=quality,
        image_score=np.clip(quality + rng.normal(0, 0.1, n), 0, 1),
        violation_score=rng.beta(0.3, 8.0, n),
        titles=titles, descriptions=descriptions, brands=brands,
    )


def generate_listings(n: int, seed: int = 0, now: datetime | None = None) -> Iterator[dict]:
    """Listing rows of :func:`generate_catalog` (what the demo and the indexer read)."""
    return generate_catalog(n, seed, now).rows()
