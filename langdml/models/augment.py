"""Training augmentation from a config: a list of torchvision transforms by name, or the options
of timm's ``create_transform``.

A list (``data.augment``) holds ``{name: CLASS, **arguments}`` entries of
``torchvision.transforms`` applied in order to the PIL image; ``ToTensor`` and the backbone's
``Normalize`` follow automatically. A ``{name: ToTensor}`` entry moves the tensor conversion
there, so tensor transforms (``RandomErasing``) can follow it. ``interpolation`` arguments take
names (``bicubic``); ``transforms`` arguments (``RandomApply``, ``RandomChoice``,
``RandomOrder``) take nested entry lists. timm options (``data.timm_augment``) go to
``timm.data.create_transform(is_training=True, ...)`` with the run's image size, normalisation
and interpolation.
"""

from __future__ import annotations

import difflib
import enum
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

from langdml.errors import ConfigError

# Set by the run (image size, normalisation, resampling), not by the options.
TIMM_RESERVED = ("input_size", "is_training", "mean", "std", "interpolation", "normalize")
_NOT_ENTRIES = {"Compose", "Normalize", "ToPILImage", "Lambda", "PILToTensor", "ConvertImageDtype"}


def transform_names() -> list[str]:
    """The torchvision transform classes an entry may name."""
    names = [
        n
        for n, obj in vars(T).items()
        if inspect.isclass(obj)
        and not issubclass(obj, enum.Enum)  # AutoAugmentPolicy, InterpolationMode: arguments
        and n[0].isupper()
        and n not in _NOT_ENTRIES
    ]
    return sorted(names)


def _where(index: str, name: str) -> str:
    return f"data.augment[{index}] {name}"


def _arguments(cls: type) -> str:
    try:
        return str(inspect.signature(cls))
    except (TypeError, ValueError):
        return "(...)"


def build_entry(entry: Any, index: str) -> Callable:
    """One ``{name: CLASS, **arguments}`` entry as a torchvision transform."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(
            f"data.augment[{index}]: expected {{name: TRANSFORM, ...arguments}}, got {entry!r}"
        )
    kwargs = {k: v for k, v in entry.items() if k != "name"}
    name = entry["name"]
    names = transform_names()
    if name not in names:
        near = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {near[0]!r}? " if near and name not in _NOT_ENTRIES else ""
        why = " (added after the entries, from the backbone)" if name == "Normalize" else ""
        raise ConfigError(
            f"{_where(index, name)}: not a torchvision transform this list takes{why}; {hint}"
            f"expected one of {', '.join(names)}"
        )
    if isinstance(kwargs.get("interpolation"), str):
        try:
            kwargs["interpolation"] = T.InterpolationMode(kwargs["interpolation"])
        except ValueError:
            modes = ", ".join(m.value for m in T.InterpolationMode)
            raise ConfigError(
                f"{_where(index, name)}: interpolation {kwargs['interpolation']!r} is not one of "
                f"{modes}"
            ) from None
    if isinstance(kwargs.get("transforms"), list):
        kwargs["transforms"] = [
            build_entry(e, f"{index}.transforms[{j}]") for j, e in enumerate(kwargs["transforms"])
        ]
    try:
        return getattr(T, name)(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{_where(index, name)}: {str(exc).splitlines()[0]}; its arguments: "
            f"{_arguments(getattr(T, name))}"
        ) from None


def augment_transform(
    entries: Sequence[dict], mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB → normalised tensor through the entries (module docstring)."""
    steps = [build_entry(e, str(i)) for i, e in enumerate(entries)]
    if not any(isinstance(s, T.ToTensor) for s in steps):
        steps.append(T.ToTensor())
    return T.Compose([*steps, T.Normalize(tuple(mean), tuple(std))])


def timm_transform(
    options: dict[str, Any],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str,
) -> Callable[[Image.Image], torch.Tensor]:
    """timm's training transform with ``options`` (``data.timm_augment``)."""
    from timm.data import create_transform

    reserved = [k for k in options if k in TIMM_RESERVED]
    if reserved:
        raise ConfigError(
            f"data.timm_augment.{reserved[0]} is set by the run (model.image_size, the "
            "backbone's normalisation, model.interpolation); remove it"
        )
    known = set(inspect.signature(create_transform).parameters) - set(TIMM_RESERVED)
    unknown = [k for k in options if k not in known]
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigError(
            f"data.timm_augment.{unknown[0]} is not an option of timm's create_transform; "
            f"{hint}expected one of {', '.join(sorted(known))}"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        return create_transform(
            input_size=image_size,
            is_training=True,
            mean=tuple(mean),
            std=tuple(std),
            interpolation=interpolation,
            **kwargs,
        )
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ConfigError(f"data.timm_augment: {str(exc).splitlines()[0]}") from None


def check_output(transform: Callable, image_size: int, what: str) -> None:
    """Run the transform on a blank image (the random state is restored afterwards): an error
    on call, or an output that is not 3 x image_size x image_size, is one line now, not an
    epoch into training."""
    import random

    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            out = transform(Image.new("RGB", (2 * image_size, 2 * image_size), (128, 90, 60)))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's pipeline is its error
        raise ConfigError(f"{what} fails on an image: {str(exc).splitlines()[0]}") from None
    finally:
        random.setstate(state)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != (3, image_size, image_size):
        raise ConfigError(
            f"{what} gives {'x'.join(map(str, shape)) if shape else type(out).__name__} images; "
            f"expected 3x{image_size}x{image_size} (model.image_size {image_size})"
        )
