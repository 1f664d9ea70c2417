"""Labelled prohibited listings for the moderation detectors (simulated).

Six violation categories with Japanese and English wording, written with variation
(word order, optional words, spacing, full-width letters) and misspellings (dropped,
doubled or swapped characters); 40% of positives evade filters with euphemisms that
legitimate listings use too (``EVASIVE``). Prices follow the category's own signal (counterfeits far
below the brand's market price, cash equivalents near face value). Hard negatives are
legitimate listings that share the words (a knife-shaped keyholder, a cigarette case,
genuine brand goods at market price, gift wrapping). Every listing gets a photo id:
each category draws mostly from its own scenes of the real sample photographs (a
*synthetic* association: the image branch has something to learn, by construction).

Negatives heavily outnumber positives in the stream (``negatives_per_positive``);
training sets are downsampled per category as the trainer documents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CATEGORIES = ("counterfeit", "weapons", "prescription_drugs", "cash_equivalents", "tobacco",
              "adult")

# (ja words, en words, price range in JPY) per category; {brand} is filled in.
POSITIVE = {
    "counterfeit": (["{brand} スーパーコピー バッグ", "{brand} N級品 財布",
                     "{brand} 風 ノーブランド 偽物", "{brand} レプリカ 時計 激安",
                     "{brand} コピー品 未使用"],
                    ["{brand} super copy bag", "{brand} replica watch cheap",
                     "fake {brand} wallet"],
                    (2_000, 9_000)),
    "weapons": (["サバイバルナイフ 刃渡り20cm", "スタンガン 護身用 高電圧", "エアガン 改造 高威力",
                 "ボウガン 本体 矢付き", "特殊警棒 伸縮"],
                ["survival knife 8 inch blade", "stun gun high voltage", "crossbow with bolts"],
                (3_000, 40_000)),
    "prescription_drugs": (["処方薬 睡眠薬 余り", "抗生物質 錠剤 病院でもらった", "ED治療薬 シート",
                            "向精神薬 未開封", "処方 湿布 大量"],
                           ["prescription sleeping pills", "antibiotics tablets leftover",
                            "viagra sheet unopened"],
                           (500, 8_000)),
    "cash_equivalents": (["Amazonギフト券 10000円分", "商品券 JCB 5000円", "現金 1万円 新札",
                          "QUOカード 1000円 10枚", "切手 シート 額面"],
                         ["amazon gift card 10000 yen", "cash 10000 yen new bills",
                          "prepaid card balance 5000"],
                         (900, 10_500)),
    "tobacco": (["タバコ カートン 未開封", "電子タバコ リキッド ニコチン入り", "葉巻 キューバ産 箱",
                 "紙巻きたばこ 海外 限定", "加熱式タバコ スティック"],
                ["cigarettes carton sealed", "nicotine e-liquid", "cuban cigars box"],
                (600, 12_000)),
    "adult": (["アダルト DVD 18禁 セット", "成人向け 写真集 過激", "アダルトグッズ 未使用",
               "18禁 ゲーム 限定版", "大人のおもちゃ 新品"],
              ["adult dvd 18+ set", "adult toy new", "18+ magazine bundle"],
              (800, 15_000)),
}
# How sellers evade filters: euphemisms that legitimate listings use too (HARD_NEGATIVE).
EVASIVE = {
    "counterfeit": (["{brand} 風 バッグ", "{brand} タイプ 財布 新品", "{brand} 似 時計"],
                    ["{brand} style bag", "{brand} inspired watch"]),
    "weapons": (["アウトドア ナイフ 大型", "護身 グッズ 強力", "エアガン 本体 パワー"],
                ["outdoor knife large", "self defense tool"]),
    "prescription_drugs": (["お薬 あまり 錠剤", "サプリ 海外 強め", "錠剤 シート まとめ"],
                           ["leftover tablets", "strong supplement overseas"]),
    "cash_equivalents": (["ギフト券 まとめ", "金券 各種", "ポイント カード 残高あり"],
                         ["gift card bundle", "prepaid card with balance"]),
    "tobacco": (["海外 土産 箱 未開封", "リキッド 強め", "カートン ケース付き"],
                ["overseas souvenir box sealed", "strong liquid refill"]),
    "adult": (["大人 向け DVD セット", "R18 本 まとめ", "大人 の おもちゃ"],
              ["adults only dvd set", "R18 books bundle"]),
}
HARD_NEGATIVE = {
    "counterfeit": (["{brand} 正規品 バッグ 美品", "{brand} 本物 財布 鑑定済み"],
                    ["authentic {brand} bag", "genuine {brand} wallet with receipt"],
                    (40_000, 200_000)),
    "weapons": (["ナイフ型 キーホルダー", "エアガン用 ターゲット 的", "包丁 研ぎ石",
                 "アウトドア ナイフ 小型 キャンプ"],
                ["knife shaped keychain", "target for airsoft", "outdoor knife small camping"],
                (300, 3_000)),
    "prescription_drugs": (["ピルケース 薬入れ", "お薬手帳 カバー", "サプリ ビタミン 錠剤"],
                           ["pill case organizer", "vitamin supplement tablets"],
                           (300, 4_000)),
    "cash_equivalents": (["ギフト ラッピング 袋", "お年玉袋 ポチ袋", "ギフト カタログ 未使用"],
                         ["gift wrapping bags", "gift catalog unused"], (200, 5_000)),
    "tobacco": (["タバコケース 革", "灰皿 アンティーク", "海外 土産 お菓子 箱"],
                ["leather cigarette case", "overseas souvenir sweets box"], (500, 8_000)),
    "adult": (["大人 服 セット", "大人 向け 絵本", "大人用 おもちゃ 知育", "DVD セット 映画"],
              ["adult clothing set", "movie dvd set"], (1_000, 30_000)),
}
NEUTRAL = (["ナイキ スニーカー 27cm 美品", "iPhone 13 128GB 本体", "絵本 セット 10冊",
            "ソファ 2人掛け 北欧", "キャンプ テント 4人用"],
           ["nike sneakers size 9", "iphone 13 128gb", "picture books set"], (800, 60_000))
BRANDS = ("ルイヴィトン", "シャネル", "グッチ", "エルメス", "ロレックス", "Louis Vuitton", "Chanel")
PHOTO_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "camera",
                 "coins", "clock", "moon", "retina", "hubble_deep_field",
                 "immunohistochemistry", "brick", "gravel", "grass")
CATEGORY_PHOTOS = {"counterfeit": "chelsea", "weapons": "rocket",
                   "prescription_drugs": "immunohistochemistry", "cash_equivalents": "coins",
                   "tobacco": "coffee", "adult": "astronaut"}


@dataclass
class Listing:
    title: str
    description: str
    price: float
    photo: str  # a source photo name of the Image Score photo set
    category: str  # violation category, "" for a legitimate listing
    hard_negative_of: str  # the category whose words a legitimate listing shares


def _misspell(text: str, rng: np.random.Generator, rate: float = 0.06) -> str:
    chars = list(text)
    for i in range(len(chars) - 1):
        r = rng.random()
        if r < rate / 3:
            chars[i] = ""
        elif r < 2 * rate / 3:
            chars[i] = chars[i] * 2
        elif r < rate:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def _vary(template: str, rng: np.random.Generator) -> str:
    words = template.format(brand=BRANDS[rng.integers(len(BRANDS))]).split()
    if len(words) > 2 and rng.random() < 0.3:
        rng.shuffle(words)
    if rng.random() < 0.2:
        words.append(("即購入OK", "送料無料", "匿名配送", "fast shipping")[rng.integers(4)])
    text = " ".join(words)
    if rng.random() < 0.1:  # full-width latin letters
        text = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    return _misspell(text, rng) if rng.random() < 0.3 else text


def _listing(spec, rng, category: str, hard_of: str, photo_category: str) -> Listing:
    ja, en, (lo, hi) = spec
    words = ja if rng.random() < 0.7 else en
    title = _vary(words[rng.integers(len(words))], rng)
    other = words[rng.integers(len(words))]
    description = _vary(other, rng) + " " + ("よろしくお願いします" if words is ja else "thanks")
    if photo_category and rng.random() < 0.6:
        photo = CATEGORY_PHOTOS[photo_category]
    else:
        photo = PHOTO_SOURCES[rng.integers(len(PHOTO_SOURCES))]
    price = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return Listing(title, description, round(price, -1), photo, category, hard_of)


def generate_violations(positives_per_category: int, negatives_per_positive: int = 10,
                        hard_share: float = 0.3, evasive_share: float = 0.4,
                        seed: int = 0) -> list[Listing]:
    """Positives of every category (``evasive_share`` of them in euphemisms that
    legitimate listings share), then legitimate listings (``hard_share`` of them hard
    negatives), shuffled."""
    rng = np.random.default_rng(seed)
    out = []
    for c in CATEGORIES:
        for _ in range(positives_per_category):
            words = EVASIVE[c] + POSITIVE[c][2:] if rng.random() < evasive_share else POSITIVE[c]
            out.append(_listing(words, rng, c, "", c))
    n_neg = positives_per_category * len(CATEGORIES) * negatives_per_positive
    for _ in range(n_neg):
        if rng.random() < hard_share:
            c = CATEGORIES[rng.integers(len(CATEGORIES))]
            out.append(_listing(HARD_NEGATIVE[c], rng, "", c, ""))
        else:
            out.append(_listing(NEUTRAL, rng, "", "", ""))
    order = rng.permutation(len(out))
    return [out[i] for i in order]
