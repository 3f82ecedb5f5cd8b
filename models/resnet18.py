"""ResNet-18 (He et al. 2016, "Deep Residual Learning", Table 1): 11.69M parameters.

A 7x7 stride-2 convolution to 64 channels + BN + ReLU, 3x3 stride-2 max pooling, four stages of two basic
blocks (3x3 conv + BN + ReLU, 3x3 conv + BN, add the shortcut, ReLU) at 64, 128, 256 and 512 channels,
global average pooling and a 1000-way classifier. Stages 2-4 halve the resolution in their first block,
whose shortcut is then a 1x1 stride-2 convolution + BN (option B of the paper).
"""

from __future__ import annotations

import torch
from torch import nn

from .init import DEFAULT_SEED, build_seeded

INPUT_SHAPE = (1, 3, 224, 224)

STAGE_CHANNELS = [64, 128, 256, 512]
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1),
        )
        blocks = []
        channels = 64
        for stage, out_channels in enumerate(STAGE_CHANNELS):
            for i in range(BLOCKS_PER_STAGE):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(x, 1))


def build(seed: int = DEFAULT_SEED) -> nn.Module:
    return build_seeded(ResNet18, INPUT_SHAPE, seed)
