"""The explicit VGG-19: configuration E written out layer by layer, as a reader would type it.

Notebook 02 reads it line by line; :func:`vggedu.vgg` builds the same network from Table 1.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGG19"]


class VGG19(nn.Module):
    """VGG-19 (configuration E) written out layer by layer, as a reader would type it.

    Deliberately unrolled (no loops, no config): notebook 02 reads it line by line.
    The module names and indices match :func:`vgg`\\ ``("E")`` and torchvision's
    ``vgg19``, so their state dicts load into each other.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            # block 1: 224x224
            nn.Conv2d(3, 64, kernel_size=3, padding=1),  # conv1_1
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, padding=1),  # conv1_2
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # pool1 -> 112x112
            # block 2
            nn.Conv2d(64, 128, kernel_size=3, padding=1),  # conv2_1
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, kernel_size=3, padding=1),  # conv2_2
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # pool2 -> 56x56
            # block 3
            nn.Conv2d(128, 256, kernel_size=3, padding=1),  # conv3_1
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # conv3_2
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # conv3_3
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # conv3_4
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # pool3 -> 28x28
            # block 4
            nn.Conv2d(256, 512, kernel_size=3, padding=1),  # conv4_1
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, kernel_size=3, padding=1),  # conv4_2
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, kernel_size=3, padding=1),  # conv4_3
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, kernel_size=3, padding=1),  # conv4_4
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # pool4 -> 14x14
            # block 5
            nn.Conv2d(512, 512, kernel_size=3, padding=1),  # conv5_1
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, kernel_size=3, padding=1),  # conv5_2
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, kernel_size=3, padding=1),  # conv5_3
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, kernel_size=3, padding=1),  # conv5_4
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # pool5 -> 7x7
        )
        # A no-op at 224x224; lets the network take larger images, as torchvision's does.
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),  # fc6: 25088 -> 4096, the largest layer
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.5),
            nn.Linear(4096, 4096),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.5),
            nn.Linear(4096, num_classes),  # fc8
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)
