"""The built-in convolutional network. PyTorch only: no scikit-learn code here."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Side of the largest feature grid the dense head sees.
_MAX_POOLED_SIDE = 8


class _BatchNorm2d(nn.BatchNorm2d):
    """Batch norm that also trains on a batch holding one value per channel.

    A single 1x1 image has no batch statistics; such a batch is normalized with
    the running statistics instead of failing, and leaves them unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() == x.size(1):
            return nn.functional.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                eps=self.eps,
            )
        return super().forward(x)


class ConvNet(nn.Module):
    """The default network: Conv -> Pool blocks, then Fully connected -> Softmax.

    One block per entry of ``filters``: a 'same' convolution, batch norm, ReLU and a
    2x2 max pool. Max pooling is skipped once the feature map is down to one pixel,
    and an adaptive average pool brings the final map to at most 8x8 cells, so any
    image size from 1x1 up works and the dense head's size stops growing with the
    image. (A global pool to 1x1 would throw away the layout that tells a cat's
    silhouette from a dog's: on the embedded data it lost 15 to 30 points.)

    The network returns logits; the classifier applies the softmax.

    Parameters
    ----------
    in_channels : int
        Number of input channels (1 for grayscale, 3 for RGB).
    n_classes : int
        Number of output classes.
    image_size : tuple of int
        ``(height, width)`` of the input images.
    filters : sequence of int, default=(32, 64)
        Number of convolution filters in each block.
    kernel_size : int, default=3
        Side of the square convolution kernels.
    dense_units : int or None, default=64
        Units of the hidden dense layer; None goes straight to the output layer.
    dropout : float, default=0.0
        Dropout probability before each dense layer.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        image_size: tuple[int, int],
        filters: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        dense_units: int | None = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        height, width = image_size
        blocks: list[nn.Module] = []
        channels = in_channels
        for n_filters in filters:
            blocks += [
                nn.Conv2d(channels, n_filters, kernel_size, padding="same", bias=False),
                _BatchNorm2d(n_filters),
                nn.ReLU(inplace=True),
            ]
            # Pool only while there is something left to pool: 1x1 images still work.
            if height >= 2 and width >= 2:
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = n_filters
        self.features = nn.Sequential(*blocks)
        # Keep the spatial layout the dense head needs to tell shapes apart, but
        # average larger maps down so the head does not grow with the image.
        pooled = (min(_MAX_POOLED_SIDE, height), min(_MAX_POOLED_SIDE, width))
        self.pool = nn.AdaptiveAvgPool2d(pooled)
        self.flatten = nn.Flatten()
        channels = channels * pooled[0] * pooled[1]
        head: list[nn.Module] = []
        if dense_units is not None:
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            head += [nn.Linear(channels, dense_units), nn.ReLU(inplace=True)]
            channels = dense_units
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(channels, n_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))
