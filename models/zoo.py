"""The zoo's registry: which models exist, their input, and how to build each. Imports no torch.

Each architecture lives in its own module (`mobilenet_v1.py`, ...) with a `build(seed=0)` function; the
registry imports it only when a model is built, so listing `ZOO` stays cheap.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgesparse.errors import EdgesparseError

if TYPE_CHECKING:
    import torch

OUTPUT_NAME = "output"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    input_name: str
    input_shape: tuple[int, ...]
    build: Callable[[], "torch.nn.Module"]  # deterministic weights, eval mode

    @property
    def source_file(self) -> Path:
        """The module that defines the architecture (part of the export cache key)."""
        return Path(__file__).with_name(f"{self.name}.py")


def _build_from_module(module_name: str) -> "torch.nn.Module":
    return importlib.import_module(f"{__package__}.{module_name}").build()


def _entry(name: str, description: str, input_shape: tuple[int, ...]) -> ZooEntry:
    return ZooEntry(name, description, "input", input_shape, functools.partial(_build_from_module, name))


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in [
        _entry("mobilenet_v1", "MobileNetV1 1.0/224, ReLU6 (Howard et al. 2017), 4.23M parameters", (1, 3, 224, 224)),
        _entry("mobilenet_v2", "MobileNetV2 1.0/224 (Sandler et al. 2018), 3.50M parameters", (1, 3, 224, 224)),
        _entry("resnet18", "ResNet-18, 224x224 input (He et al. 2016), 11.69M parameters", (1, 3, 224, 224)),
        _entry("mlp", "MLP 784-512-256-10 with ReLU, 0.54M parameters", (1, 784)),
    ]
}


def get_entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise EdgesparseError(f"unknown zoo model '{name}' (known: {', '.join(ZOO)})") from None


def build(name: str) -> "torch.nn.Module":
    """The named model with its deterministic weights, in eval mode."""
    return get_entry(name).build()
