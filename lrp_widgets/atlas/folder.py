"""An image folder as the atlas reads it: one sub-folder per class, named by the model's class index, its
category name or (ImageNet models) its WordNet id; images decoded in worker processes, bad files skipped.

>>> import tempfile, pathlib
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "n02980441").mkdir(); Image.new("RGB", (8, 8)).save(root / "n02980441" / "a.png")
>>> [(item.path, item.label) for item in list_images(root, IMAGENET_CATEGORY_COUNT * ["?"])]
[('n02980441/a.png', 483)]
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ..engine.images import open_image
from ..errors import ImageError, LRPWidgetsError, TargetError

IMAGENET_CATEGORY_COUNT = 1000
#: file name endings taken as images (others, e.g. a README, are not looked at)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif")


@dataclass(frozen=True)
class Item:
    """One image of the folder: its path relative to the folder and its class index."""

    path: str
    label: int


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The WordNet ids of ImageNet-1k's classes in torchvision's class order (n01440764 … n15075141; the list
    timm ships as ``imagenet_synsets.txt``, Apache-2.0)."""
    return tuple((Path(__file__).with_name("imagenet_wnids.txt")).read_text().split())


def class_index(name: str, categories: Sequence[str], classes: int | None = None) -> int | None:
    """The class a sub-folder names: an index (below ``classes``, default: as many as categories, if any), a category
    name (any case, ``_`` for spaces) or a WordNet id."""
    if name.isdigit():
        limit = classes if classes is not None else len(categories) or None
        return int(name) if limit is None or int(name) < limit else None
    if len(categories) == IMAGENET_CATEGORY_COUNT and name in imagenet_wnids():
        return imagenet_wnids().index(name)
    wanted = name.replace("_", " ").casefold()
    return next((i for i, category in enumerate(categories) if category.casefold() == wanted), None)


def list_images(folder: str | Path, categories: Sequence[str], classes: int | None = None) -> list[Item]:
    """Every image file under the class sub-folders, sorted; one line on what is wrong before any work.
    ``classes``: how many the model has (default: as many as ``categories``)."""
    root = Path(folder)
    if not root.is_dir():
        raise ImageError(f"image folder '{folder}' does not exist")
    subfolders = sorted(entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not subfolders:
        raise ImageError(f"'{folder}' has no class sub-folders: put each class's images in a sub-folder named by its "
                         "class index, category name or WordNet id")
    labels = {entry.name: class_index(entry.name, categories, classes) for entry in subfolders}
    unknown = [name for name, label in labels.items() if label is None]
    if unknown:
        example = "0, castle or n02980441" if len(categories) == IMAGENET_CATEGORY_COUNT else f"0–{(classes or len(categories)) - 1}"
        raise TargetError(f"sub-folder '{unknown[0]}' of '{folder}' names no class of the model: name it by class "
                          f"index, category name or WordNet id (e.g. {example})")
    items = [Item(path.relative_to(root).as_posix(), labels[entry.name]) for entry in subfolders
             for path in sorted(entry.rglob("*")) if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise ImageError(f"'{folder}' holds no image files ({', '.join(IMAGE_SUFFIXES[:4])} …) in its class sub-folders")
    return items


class ImageFolder(torch.utils.data.Dataset):
    """The model's inputs for ``items``: ``(position, tensor, None)`` or ``(position, None, reason)`` for a file
    that cannot be read (run in a DataLoader's workers: decoding never blocks the explanations)."""

    def __init__(self, root: str | Path, items: Sequence[Item], preprocess: Callable[[Image.Image], torch.Tensor]):
        self.root, self.items, self.preprocess = Path(root), list(items), preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int):
        try:
            return position, self.preprocess(open_image(self.root / self.items[position].path)), None
        except LRPWidgetsError as error:
            return position, None, str(error)
        except Exception as error:  # noqa: BLE001 — a file that breaks the decoder is skipped, said in one line
            return position, None, f"{self.items[position].path} cannot be decoded ({type(error).__name__})"


def collate(samples: list) -> list:
    """Samples as they are: the batch is stacked after the bad files are taken out."""
    return samples
