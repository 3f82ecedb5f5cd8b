"""The zoo's registry: which models exist, their input, and how to build each. Imports no torch.

Each architecture lives in its own module (`mobilenet_v1.py`, ...) with a `build(seed=0)` function; the
registry imports it only when a model is built, so listing `ZOO` stays cheap.

Pruned variants (`mobilenet_v1-p90`, ...) are the dense model's ONNX export magnitude-pruned by
`edgesparse.prune.prune_onnx` with its defaults (stem conv, depthwise convs and the classifier stay dense): the
1x1 convolutions are what is pruned, to exactly the stated sparsity each. Their `build()` is the dense model
with the pruned ONNX's weights loaded, so the PyTorch and ONNX forms agree.
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
    base: str | None = None  # a pruned variant: the dense model it is pruned from
    sparsity: float | None = None  # a pruned variant: the per-layer sparsity prune_onnx is given

    @property
    def source_file(self) -> Path:
        """The module that defines the architecture (part of the export cache key)."""
        return Path(__file__).with_name(f"{self.base or self.name}.py")


def _build_from_module(module_name: str) -> "torch.nn.Module":
    return importlib.import_module(f"{__package__}.{module_name}").build()


def _build_pruned(name: str) -> "torch.nn.Module":
    """The dense model of a pruned variant with the weights of the variant's (pruned) ONNX export."""
    import onnx
    import torch
    from onnx import numpy_helper

    from .export import export_onnx

    entry = get_entry(name)
    model = _build_from_module(entry.base)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(export_onnx(name))).graph.initializer}
    state = model.state_dict()
    unknown = sorted(set(weights) - set(state))
    if unknown:  # the exporter names initializers by their state_dict key; a renamed one would stay unpruned
        raise EdgesparseError(f"{name}: ONNX initializers {unknown[:3]} are not parameters of {entry.base}")
    with torch.no_grad():
        for key, array in weights.items():
            state[key].copy_(torch.from_numpy(array.copy()))
    return model


def _entry(name: str, description: str, input_shape: tuple[int, ...]) -> ZooEntry:
    return ZooEntry(name, description, "input", input_shape, functools.partial(_build_from_module, name))


def _pruned(base: ZooEntry, percent: int) -> ZooEntry:
    name = f"{base.name}-p{percent}"
    short = base.description.split(",")[0].split(" (")[0]
    return ZooEntry(name, f"{short}, 1x1 convs magnitude-pruned to {percent}% (stem, depthwise, classifier dense)",
                    base.input_name, base.input_shape, functools.partial(_build_pruned, name), base=base.name,
                    sparsity=percent / 100)


_DENSE = [
    _entry("mobilenet_v1", "MobileNetV1 1.0/224, ReLU6 (Howard et al. 2017), 4.23M parameters", (1, 3, 224, 224)),
    _entry("mobilenet_v2", "MobileNetV2 1.0/224 (Sandler et al. 2018), 3.50M parameters", (1, 3, 224, 224)),
    _entry("resnet18", "ResNet-18, 224x224 input (He et al. 2016), 11.69M parameters", (1, 3, 224, 224)),
    _entry("mlp", "MLP 784-512-256-10 with ReLU, 0.54M parameters", (1, 784)),
]
#: the dense models with pruned variants, and their sparsities in percent
PRUNED = {"mobilenet_v1": (70, 80, 90), "mobilenet_v2": (70, 80, 90)}

ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for base in _DENSE
    for entry in [base, *(_pruned(base, p) for p in PRUNED.get(base.name, ()))]
}


def get_entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise EdgesparseError(f"unknown zoo model '{name}' (known: {', '.join(ZOO)})") from None


def build(name: str) -> "torch.nn.Module":
    """The named model with its deterministic weights, in eval mode."""
    return get_entry(name).build()
