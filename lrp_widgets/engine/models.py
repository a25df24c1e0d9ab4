"""Loading torchvision CNNs with ImageNet, random or local weights.

The weights are memory-mapped from a cached file in torch's zip format (ImageNet: converted once from
torchvision's hash-checked download; random: generated once from the fixed seed), so their pages are
file-backed: shared by every kernel on a server and reclaimable, not anonymous memory of each process.

>>> import warnings
>>> with warnings.catch_warnings(record=True):
...     model = load_model("vgg11", weights="random")
>>> model.pretrained, model.category(0)
(False, 'tench')
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pickle
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms

from ..errors import ModelError, WeightsError
from .families import FAMILIES, MODELS  # noqa: F401 — the names load_model accepts, by family
from .images import IMAGENET_MEAN, IMAGENET_STD, crop_aspect, preprocess, to_rgb

RANDOM_SEED = 0
#: GoogLeNet's ImageNet weights expect its ``transform_input``, which renormalises ImageNet-normalised
#: images to (x − 0.5) / 0.5; the same normalisation is applied in preprocessing instead, so the traced
#: network starts with its first convolution.
_HALF = (0.5, 0.5, 0.5)


class UntrainedWeightsWarning(UserWarning):
    """Explanations of a model with random weights mean nothing about the world."""


UNTRAINED_MESSAGE = ("random (untrained) weights: the explanations show how LRP works, "
                     "not what a trained network sees")


@dataclass
class LoadedModel:
    """A model in eval mode and what the app needs to say about it: its class names and how an image
    becomes its input (``transform``, or resize 256, centre-crop 224 and normalise with ``mean``/``std``,
    one value per input channel: z^B's pixel bounds come from them too).

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> LoadedModel.of(net, categories=["cat", "dog"]).category(1)
    'dog'
    >>> LoadedModel.of(net, size=32).preprocess(Image.new("RGB", (64, 48))).shape
    torch.Size([3, 32, 32])
    """

    module: nn.Module
    name: str
    weights: str
    pretrained: bool
    categories: list[str]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    transform: Callable[[Image.Image], torch.Tensor] | None = None
    #: the input's side (the centre crop) where known
    size: int | None = 224
    #: explainers by composite, made once: they hold the traced network and its folded batch norms
    explainers: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, module: nn.Module, categories: Sequence[str] = (), name: str | None = None,
           transform: Callable[[Image.Image], torch.Tensor] | None = None, mean: Sequence[float] | None = None,
           std: Sequence[float] | None = None, size: int = 224) -> "LoadedModel":
        """A user's own module (its weights as they are: counted as trained). ``mean``/``std``: its normalisation
        (default ImageNet's); without a ``transform``, an image is resized to round(size·256/224), centre-cropped
        to ``size`` and normalised with them."""
        if not isinstance(module, nn.Module):
            raise ModelError(f"a model must be a torch.nn.Module, not {type(module).__name__}")
        name = name or type(module).__name__
        mean, std = tuple(IMAGENET_MEAN if mean is None else mean), tuple(IMAGENET_STD if std is None else std)
        channels = next((m.in_channels for m in module.modules() if isinstance(m, nn.Conv2d)), len(mean))
        if len(mean) != channels or len(std) != channels:
            raise ModelError(f"{name} takes {channels}-channel inputs: give mean and std with {channels} values each "
                             f"(not {len(mean)} and {len(std)})")
        if min(std) <= 0:
            raise ModelError(f"std must be positive, not {', '.join(map(str, std))}")
        if size < 1:
            raise ModelError(f"the input size must be at least 1 pixel, not {size}")
        if transform is not None:
            size = None  # the transform decides
        elif size != 224:
            transform = transforms.Compose([to_rgb, crop_aspect, transforms.Resize(round(size * 256 / 224)),
                                            transforms.CenterCrop(size), transforms.ToTensor(),
                                            transforms.Normalize(mean, std)])
        return cls(module, name, "own", True, list(categories), mean, std, transform, size)

    def category(self, index: int) -> str:
        return self.categories[index] if 0 <= index < len(self.categories) else f"class {index}"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model's input for one image (C, H, W)."""
        return self.transform(image) if self.transform is not None else preprocess(image, self.mean, self.std)


def load_user_model(spec: str, weights: str | Path | None = None, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, size: int = 224, categories: Sequence[str] = ()) -> LoadedModel:
    """Your own network by its import path, as uvicorn takes apps: ``module.path:attribute`` (the current folder
    importable) or ``path/to/file.py:attribute``, naming an ``nn.Module`` or a callable that returns one (called
    with no arguments). ``weights``: ``None``/``"own"`` (as the module has them) or a state-dict file; ``mean``,
    ``std``, ``size``: see :meth:`LoadedModel.of`. Every error is one :class:`ModelError` line naming ``spec``.
    """
    if weights in ("imagenet", "random", "auto"):
        raise WeightsError(f"weights '{weights}' are for torchvision's models: your model '{spec}' takes its own "
                           "(own, the default) or a state-dict file")
    module = _user_module(spec)
    label = "own"
    if weights not in (None, "own"):
        module.load_state_dict(_read_state_dict(Path(weights), module, spec))
        label = str(weights)
    model = LoadedModel.of(module.eval().requires_grad_(False), categories, spec, mean=mean, std=std, size=size)
    model.weights = label
    shape = (1, len(model.mean), model.size, model.size)
    parameter = next(module.parameters(), None)
    try:
        with torch.no_grad():
            module(torch.zeros(shape, device=parameter.device if parameter is not None else "cpu"))
    except Exception as error:  # noqa: BLE001 - any failure of the user's forward is reported in one line
        raise ModelError(f"model '{spec}' does not take inputs of shape {tuple(shape)} ({_first_line(error)}): "
                         "give its input size (--size)") from None
    return model


def _user_module(spec: str) -> nn.Module:
    """The ``nn.Module`` that ``module.path:attribute`` or ``file.py:attribute`` names (a callable is called)."""
    source, colon, attribute = spec.rpartition(":")
    if not colon or not source or not attribute:
        raise ModelError(f"unknown model '{spec}': give a torchvision name such as vgg16 or resnet50 (all in "
                         "lrp_widgets.engine.models.MODELS) or your own as module.path:attribute or file.py:attribute")
    value = _import(source, spec)
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ModelError(f"model '{spec}': {source} has no attribute '{attribute}'")
        value = getattr(value, part)
    if isinstance(value, nn.Module):
        return value
    if not callable(value):
        raise ModelError(f"model '{spec}': {attribute} (of type {type(value).__name__}) is not a torch.nn.Module "
                         "nor a function that returns one")
    try:
        value = value()
    except Exception as error:  # noqa: BLE001 - the user's code may raise anything
        raise ModelError(f"model '{spec}': {attribute}() failed ({_first_line(error)})") from None
    if not isinstance(value, nn.Module):
        raise ModelError(f"model '{spec}': {attribute}() returned a value of type {type(value).__name__}, not a "
                         "torch.nn.Module")
    return value


def _import(source: str, spec: str):
    """The Python module ``source`` (a dotted name, the current folder importable like uvicorn's, or a .py file)."""
    if source.endswith(".py") and not Path(source).is_file():
        raise ModelError(f"model '{spec}': file '{source}' does not exist")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if not source.endswith(".py"):
            return importlib.import_module(source)
        found = importlib.util.spec_from_file_location(f"_lrp_widgets_user.{Path(source).stem}", source)
        module = importlib.util.module_from_spec(found)
        sys.modules[found.name] = module  # dataclasses and the like look their module up
        found.loader.exec_module(module)
        return module
    except ModuleNotFoundError as error:
        if error.name and (source + ".").startswith(error.name + "."):
            raise ModelError(f"model '{spec}': no module named '{error.name}' (run from the folder that holds it, "
                             "or install it)") from None
        raise ModelError(f"model '{spec}': importing {source} failed ({_first_line(error)})") from None
    except Exception as error:  # noqa: BLE001 - the user's code may raise anything
        raise ModelError(f"model '{spec}': importing {source} failed ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:120]}" if text else type(error).__name__


def weights_enum(name: str) -> torchvision.models.WeightsEnum:
    """torchvision's ImageNet weights of a model (they also carry the class names and transforms)."""
    return torchvision.models.get_model_weights(name).IMAGENET1K_V1


def _builder(name: str, pretrained: bool) -> Callable[[], nn.Module]:
    """The torchvision builder, with the options the weights need (GoogLeNet: without its auxiliary heads
    and input transform at random, with the heads its checkpoint holds for ImageNet)."""
    builder = torchvision.models.get_model_builder(name)
    if name == "googlenet":
        return lambda: builder(weights=None, aux_logits=pretrained, transform_input=False, init_weights=not pretrained)
    return lambda: builder(weights=None)


def skeleton(builder: Callable[[], nn.Module]) -> nn.Module:
    """The model without weights: on the meta device, no memory and no initialisation (the parameters come
    from a mapped file). RegNet computes its widths with tensors, so it is built on the CPU."""
    try:
        with torch.device("meta"):
            return builder()
    except NotImplementedError:
        return builder()


def load_model(name: str = "vgg16", weights: str | Path | None = "random", progress: bool = True,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Build a torchvision model (:data:`MODELS`) with ``weights``: ``"imagenet"`` (torchvision's download, hash-checked and
    cached), a state-dict file, ``None``/``"random"`` (fixed seed, with an :class:`UntrainedWeightsWarning`), or
    ``"auto"``: ImageNet where they can be had, random (with the warning) where not."""
    if weights == "auto":
        try:
            return load_model(name, "imagenet", progress, device)
        except WeightsError:
            return load_model(name, "random", progress, device)
    if name not in MODELS:
        raise ModelError(f"unknown model '{name}': choose one of {', '.join(MODELS)}")
    enum = weights_enum(name)
    categories = list(enum.meta["categories"])
    builder = _builder(name, weights not in (None, "random"))
    module = skeleton(builder)
    if weights in (None, "random"):
        state = _mapped(f"{name}-random-seed{RANDOM_SEED}.pt", lambda: _random_state(builder))
        warnings.warn(UNTRAINED_MESSAGE, UntrainedWeightsWarning, stacklevel=2)
        label, pretrained = "random", False
    elif weights == "imagenet":
        checkpoint = _download(enum, progress)
        state = _mapped(f"{checkpoint.stem}.pt", lambda: _checked_state(checkpoint))
        label, pretrained = "imagenet", True
    else:
        state = _read_state_dict(Path(weights), module, name)
        label, pretrained = str(weights), True
    module.load_state_dict(state, assign=True)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if name == "googlenet" and pretrained:  # the auxiliary heads are for training; transform_input is preprocessing
        module.aux_logits, module.aux1, module.aux2 = False, None, None
        mean, std = _HALF, _HALF
    return LoadedModel(module.eval().requires_grad_(False).to(device), name, label, pretrained, categories, mean, std)


def weights_cache() -> Path:
    """Where the memory-mappable weight files are kept (``$XDG_CACHE_HOME/lrp-widgets/weights``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lrp-widgets" / "weights"


def _mapped(filename: str, make) -> dict[str, torch.Tensor]:
    """The state dict in ``weights_cache()/filename``, memory-mapped; written once (atomically) from
    ``make()``. Where the cache cannot be written, ``make()``'s tensors are used as they are."""
    path = weights_cache() / filename
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        pass
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError):  # damaged: made again
        path.unlink(missing_ok=True)
    state = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp") as tmp:
            torch.save(state, tmp)
            tmp.flush()
            os.chmod(tmp.name, 0o644)
            os.link(tmp.name, path)  # appears whole or not at all; the first of two writers wins
    except FileExistsError:
        pass
    except OSError:
        return state
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _random_state(builder) -> dict[str, torch.Tensor]:
    """A fixed random initialisation; a layer initialised to zero (ViT's head) gets its class's default instead:
    with every score 0 there would be nothing to explain."""
    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_SEED)
        module = builder()
        for layer in module.modules():
            if isinstance(layer, nn.Linear) and not layer.weight.any():
                layer.reset_parameters()
        return module.state_dict()


def _checked_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The downloaded checkpoint, read only if its sha256 still starts with the prefix in its name."""
    prefix = torch.hub.HASH_REGEX.search(checkpoint.name).group(1)
    digest = hashlib.sha256()
    with checkpoint.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(prefix):
        checkpoint.unlink()
        raise WeightsError(f"'{checkpoint}' is damaged (its sha256 does not start with {prefix}); it was "
                           "removed: run again to download it")
    return torch.load(checkpoint, map_location="cpu", weights_only=True)


def _download(enum, progress: bool) -> Path:
    """torchvision's weights into the hub cache; the download is hash-checked and atomic."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        hash_prefix = torch.hub.HASH_REGEX.search(cache.name).group(1)
        try:
            torch.hub.download_url_to_file(enum.url, str(cache), hash_prefix, progress=progress)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash is a RuntimeError
            reason = str(getattr(error, "reason", error)).splitlines()[0]
            raise WeightsError(f"could not download the ImageNet weights ({reason}); offline, download "
                               f"{enum.url} elsewhere and pass it with --weights PATH (or place it at {cache})"
                               ) from None
    return cache


def _load_file(path: Path) -> dict:
    """Memory-mapped where the file is in torch's zip format; older formats are read into memory."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "zipfile" not in str(error) and "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_state_dict(path: Path, module: nn.Module, name: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file '{path}' does not exist")
    try:
        state = _load_file(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(f"'{path}' is not a weights file that can be loaded safely ({first[:120]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"'{path}' does not hold a state dict of tensors")
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}" for what, keys in
                           (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys)
        raise WeightsError(f"weights file '{path}' does not fit {name} ({detail})")
    # the parameters are taken as they are (assigned, not copied): other float types become float32
    return {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in state.items()}
