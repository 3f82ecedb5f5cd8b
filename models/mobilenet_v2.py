"""MobileNetV2 1.0/224 (Sandler et al. 2018, "MobileNetV2", Table 2): 3.50M parameters.

A 3x3 stride-2 convolution to 32 channels, 17 inverted-residual bottlenecks (1x1 expansion + BN + ReLU6,
3x3 depthwise + BN + ReLU6, 1x1 linear projection + BN, with a residual add when stride is 1 and the
channel count is unchanged), a 1x1 convolution to 1280 features, global average pooling and a
1000-way classifier. The expansion layer is absent when the expansion factor is 1 (the first bottleneck).
The paper's dropout before the classifier is an identity at inference and is left out.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import DEFAULT_SEED, build_seeded

INPUT_SHAPE = (1, 3, 224, 224)

# Table 2: expansion factor t, output channels c, repeats n, stride s of the first repeat.
BOTTLENECK_STAGES = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
STEM_CHANNELS = 32
FINAL_FEATURES = 1280


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1, relu6: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu6:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers = []
        if expansion != 1:
            layers.append(conv_bn(in_channels, hidden, 1))
        layers.append(conv_bn(hidden, hidden, 3, stride, groups=hidden))
        layers.append(conv_bn(hidden, out_channels, 1, relu6=False))  # linear bottleneck
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, STEM_CHANNELS, 3, 2)]
        channels = STEM_CHANNELS
        for expansion, out_channels, repeats, first_stride in BOTTLENECK_STAGES:
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, first_stride if i == 0 else 1, expansion))
                channels = out_channels
        layers.append(conv_bn(channels, FINAL_FEATURES, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(FINAL_FEATURES, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build(seed: int = DEFAULT_SEED) -> nn.Module:
    return build_seeded(MobileNetV2, INPUT_SHAPE, seed)
