"""MobileNetV1 1.0/224 (Howard et al. 2017, "MobileNets", Table 1): 4.23M parameters.

A 3x3 stride-2 convolution to 32 channels, 13 depthwise-separable blocks (3x3 depthwise + BN + activation,
then 1x1 pointwise + BN + activation), global average pooling and a 1000-way classifier.

Activation: ReLU6, not the paper's plain ReLU. The reference model people deploy and benchmark on edge
devices is TensorFlow-slim's (`mobilenet_v1.py`, the checkpoints behind the TFLite MobileNetV1 and
XNNPACK's end-to-end benchmarks), and it uses ReLU6; in ONNX that is a Clip(0, 6) after each BN, which the
compiler has to fuse just like a ReLU. With BN statistics calibrated to unit scale the clip at 6 is rarely
reached, so numerically the choice hardly matters.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import DEFAULT_SEED, build_seeded

INPUT_SHAPE = (1, 3, 224, 224)

# (output channels, stride of the depthwise conv) for the 13 depthwise-separable blocks.
SEPARABLE_BLOCKS = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]


def conv_bn_relu6(in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers = [conv_bn_relu6(3, 32, 3, 2)]
        channels = 32
        for out_channels, stride in SEPARABLE_BLOCKS:
            layers.append(conv_bn_relu6(channels, channels, 3, stride, groups=channels))  # depthwise
            layers.append(conv_bn_relu6(channels, out_channels, 1, 1))  # pointwise
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build(seed: int = DEFAULT_SEED) -> nn.Module:
    return build_seeded(MobileNetV1, INPUT_SHAPE, seed)
