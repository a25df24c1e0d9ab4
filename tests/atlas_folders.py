"""Image folders for the atlas's tests and benchmarks, made from the case-study images: class sub-folders named by
WordNet id, each image a different crop, flip and brightness of one of the three photographs, and three files
no decoder reads."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

IMAGES = Path(os.environ.get("LRP_WIDGETS_IMAGES", Path(__file__).resolve().parents[2] / "shared" / "images"))
#: castle, barn, zebra, church, boathouse, horse cart: the first three photographs again for the last three
WNIDS = ("n02980441", "n02793495", "n02391049", "n03028079", "n02859443", "n03538406")
BAD_FILES = ("n02980441/not-an-image.jpg", "n02793495/truncated.jpg", "n02391049/empty.png")


def photographs() -> list[Image.Image]:
    return [Image.open(IMAGES / name).convert("RGB") for name in
            ("n02980441_castle.JPEG", "n02793495_barn.JPEG", "n02391049_zebra.JPEG")]


def variant(image: Image.Image, number: int) -> Image.Image:
    """A crop (a different corner and size), a flip and a brightness of ``image``, one for each ``number``."""
    width, height = image.size
    scale = 0.6 + 0.05 * (number % 8)
    w, h = int(width * scale), int(height * scale)
    left, top = (number * 37) % (width - w + 1), (number * 53) % (height - h + 1)
    crop = image.crop((left, top, left + w, top + h))
    crop = ImageOps.mirror(crop) if number % 2 else crop
    return ImageEnhance.Brightness(crop).enhance(0.7 + 0.1 * (number % 6))


def case_study_folder(root: Path, per_class: int = 8, classes: int = 6, bad: bool = True,
                      size: tuple[int, int] = (320, 240)) -> Path:
    """``classes`` × ``per_class`` JPEG images of ``size`` in WordNet-id sub-folders, and :data:`BAD_FILES`."""
    sources = photographs()
    for c, wnid in enumerate(WNIDS[:classes]):
        (root / wnid).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            variant(sources[c % 3], c * per_class + i).resize(size).save(root / wnid / f"{i:04d}.jpg",
                                                                              quality=90)
    if bad:
        (root / BAD_FILES[0]).write_text("these are words, not pixels")
        good = (root / WNIDS[1] / "0000.jpg").read_bytes()
        (root / BAD_FILES[1]).write_bytes(good[: len(good) // 3])
        (root / BAD_FILES[2]).write_bytes(b"")
    return root
