"""Convolutions on maps no larger than their window: only the kernel taps that touch the map are computed.

At the classifier's 32 px crops resnet18's last stage works on 1 x 1 maps (and its first convolution takes
2 x 2 to 1 x 1): a 3 x 3 kernel there multiplies padding zeros with eight of its nine taps, and oneDNN's
backward pass for such maps is slow, so those few layers took about half of a training step on the CPU.
When a convolution has a single output position and its input lies inside that one window, the result is
the same convolution restricted to the taps over the input, without padding: the same numbers, and the
same gradients (the other taps' are zero either way). Parameters and state dicts are unchanged.
Measured: docs/results.md#classifier (bench/conv_window.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WindowConv2d(nn.Conv2d):
    """nn.Conv2d that convolves only the taps over the input when the input fits one output window."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph, pw = self.padding if isinstance(self.padding, tuple) else (-1, -1)  # "same"/"valid": not here
        one_window = (
            not torch.jit.is_tracing()  # ONNX export: the full kernel, whose shape the exporter knows
            and (h < kh or w < kw)  # taps to drop
            and ph >= 0
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and h + ph <= kh  # the input lies inside the window (the far side's padding only adds zeros)
            and w + pw <= kw
            and (h + 2 * ph - kh) // sh == 0  # a single output position
            and (w + 2 * pw - kw) // sw == 0
        )
        if not one_window:
            return super().forward(x)
        return F.conv2d(x, self.weight[:, :, ph : ph + h, pw : pw + w], self.bias, groups=self.groups)


def window_convs(model: nn.Module) -> nn.Module:
    """Make every plain nn.Conv2d of `model` a WindowConv2d, in place (the same parameters); returns it."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = WindowConv2d
    return model
