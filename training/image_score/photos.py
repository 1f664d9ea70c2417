"""Photos whose quality order is known by construction: real photos, degraded.

The offline label source: the real sample photographs that ship inside scikit-image,
cropped at random into base images, then degraded in five controlled ways at three
strengths. A stronger degradation of the same base image is worse by construction,
which gives ordered pairs and quality classes without any annotator:

- ``blur``: Gaussian blur; ``noise``: Gaussian sensor noise; ``jpeg``: compression;
- ``dark``: under-exposure; ``crop``: a tight off-centre crop blown up (bad framing).

Classes: strength 0 (the clean base) is ``good`` (2), strength 1 ``fair`` (1),
strengths 2 and 3 ``poor`` (0).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from app.image_input import SIZE

# Real photographs shipped with scikit-image (no download): colour and grey scenes.
SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "camera",
           "coins", "clock", "moon", "retina", "hubble_deep_field", "immunohistochemistry",
           "brick", "gravel", "grass")
KINDS = ("blur", "noise", "jpeg", "dark", "crop")
STRENGTHS = (1, 2, 3)
CLASSES = ("poor", "fair", "good")


def quality_class(strength: int) -> int:
    return 2 if strength == 0 else 1 if strength == 1 else 0


def source_photo(name: str) -> Image.Image:
    import skimage.data

    data = getattr(skimage.data, name)()
    if isinstance(data, tuple):  # stereo pairs
        data = data[0]
    image = Image.fromarray(data)
    return image.convert("RGB")


def base_images(name: str, n: int, rng: np.random.Generator) -> list[Image.Image]:
    """``n`` random square crops (60-100% of the short side) of a source, at SIZE."""
    photo = source_photo(name)
    w, h = photo.size
    out = []
    for _ in range(n):
        side = int(min(w, h) * rng.uniform(0.6, 1.0))
        x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        out.append(photo.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.BICUBIC))
    return out


def degrade(image: Image.Image, kind: str, strength: int, rng: np.random.Generator
            ) -> Image.Image:
    """``image`` degraded by ``kind`` at ``strength`` (0 = unchanged)."""
    if strength == 0:
        return image
    k = strength - 1
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur((1.0, 2.5, 5.0)[k]))
    if kind == "noise":
        x = np.asarray(image, np.float32) / 255
        x = x + rng.normal(0, (0.04, 0.10, 0.20)[k], x.shape)
        return Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8))
    if kind == "jpeg":
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=(20, 8, 3)[k])
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "dark":
        x = np.asarray(image, np.float32) / 255
        return Image.fromarray((np.clip(x * (0.45, 0.22, 0.1)[k], 0, 1) * 255).astype(np.uint8))
    if kind == "crop":
        side = int(SIZE * (0.55, 0.35, 0.2)[k])
        x0 = int(rng.integers(0, SIZE - side + 1))
        return image.crop((x0, 0, x0 + side, side)).resize((SIZE, SIZE), Image.NEAREST)
    raise ValueError(f"unknown degradation {kind!r} (one of {KINDS})")


@dataclass
class PhotoSet:
    """Images with their construction: source photo, base crop, degradation, strength."""

    images: list[Image.Image]
    source: np.ndarray  # str
    base: np.ndarray  # int: base image id (variants of one base are comparable)
    kind: np.ndarray  # str ("clean" for strength 0)
    strength: np.ndarray  # int 0..3
    label: np.ndarray  # int quality class

    def pairs(self, rows: np.ndarray) -> np.ndarray:
        """(better, worse) index pairs among ``rows``: same base, and either the clean
        base against a degraded variant or two strengths of the same degradation."""
        out = []
        by_base: dict[int, list[int]] = {}
        for r in rows.tolist():
            by_base.setdefault(int(self.base[r]), []).append(r)
        for members in by_base.values():
            for a in members:
                for b in members:
                    same_kind = self.kind[a] == self.kind[b] or self.strength[a] == 0
                    if same_kind and self.strength[a] < self.strength[b]:
                        out.append((a, b))
        return np.array(out, np.int64).reshape(-1, 2)


def build_photo_set(crops_per_source: int = 6, seed: int = 0,
                    sources: tuple[str, ...] = SOURCES) -> PhotoSet:
    rng = np.random.default_rng(seed)
    images, source, base, kind, strength = [], [], [], [], []
    base_id = 0
    for name in sources:
        for clean in base_images(name, crops_per_source, rng):
            variants = [("clean", 0)] + [(k, s) for k in KINDS for s in STRENGTHS]
            for k, s in variants:
                images.append(degrade(clean, k, s, rng) if s else clean)
                source.append(name)
                base.append(base_id)
                kind.append(k)
                strength.append(s)
            base_id += 1
    strength_arr = np.array(strength)
    return PhotoSet(images, np.array(source), np.array(base), np.array(kind), strength_arr,
                    np.array([quality_class(s) for s in strength_arr]))
