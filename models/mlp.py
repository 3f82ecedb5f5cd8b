"""A small multilayer perceptron, 784 -> 512 -> 256 -> 10 with ReLU: the zoo's smallest, dense-only model."""

from __future__ import annotations

import torch
from torch import nn

from .init import DEFAULT_SEED, build_seeded

INPUT_SHAPE = (1, 784)
LAYER_WIDTHS = [784, 512, 256, 10]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (width_in, width_out) in enumerate(zip(LAYER_WIDTHS, LAYER_WIDTHS[1:])):
            if i > 0:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(width_in, width_out))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build(seed: int = DEFAULT_SEED) -> nn.Module:
    return build_seeded(MLP, INPUT_SHAPE, seed)
