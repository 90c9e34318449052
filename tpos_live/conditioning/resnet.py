"""ResNet-18 in plain torch, with timm's ``resnet18`` module names so its weights load 1:1.

The official TPoS encoder builds its per-segment CNN with ``timm.create_model("resnet18",
num_classes=768)``. This module has the same layers under the same names, so a ``state_dict`` taken
from that model (or from timm directly) loads here key for key::

    conv1, bn1, layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}, layer{2,3,4}.0.downsample.{0,1}, fc

Layout (timm's defaults for resnet18): 7x7/2 stem conv, BatchNorm, ReLU, 3x3/2 max-pool, four stages of
two BasicBlocks (64, 128, 256, 512 channels; stride 2 from stage 2 on, with a 1x1 conv + BatchNorm
shortcut where the shape changes), global average pool, linear head. ``width`` narrows every stage
alike (16: 16, 32, 64, 128 channels, about 1/16 of the weights) for small worlds; the official is 64.
"""

from __future__ import annotations

import torch
from torch import nn

from tpos_live.limits import OFFICIAL_BACKBONE_WIDTH

STAGE_MULTIPLIERS = (1, 2, 4, 8)  # each stage's channels, in units of the first stage's width
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut (timm's ``BasicBlock``, expansion 1)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class ResNet18(nn.Module):
    """ResNet-18 taking ``(B, 3, H, W)`` to ``(B, num_classes)``; any H, W of at least 32 or so.
    ``width``: the first stage's channels (the official 64)."""

    def __init__(self, num_classes: int = 1000, width: int = OFFICIAL_BACKBONE_WIDTH) -> None:
        super().__init__()
        stage_channels = [width * multiplier for multiplier in STAGE_MULTIPLIERS]
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = width
        for index, channels in enumerate(stage_channels):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(in_channels, channels, stride)]
            blocks += [BasicBlock(channels, channels) for _ in range(BLOCKS_PER_STAGE - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = channels
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's init, except that the last BatchNorm of each block keeps weight 1 (timm zeroes it for
        # training): a randomly initialised encoder then still sees its input through every block.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 8 width, H / 32, W / 32)``: everything before pooling."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.forward_features(x).mean(dim=(2, 3))
        return self.fc(pooled)
