"""The locator network: a timm encoder, a light FPN decoder, a heatmap per point and a slice head.

The decoder merges the encoder's feature maps top-down (1x1 lateral convs, nearest upsampling, one 3x3
conv per step) down to `out_stride`, then a 1x1 conv gives one heatmap per point. For volume inputs (all
slices of a sagittal series as channels) each point also gets `depth` slice logits: the decoder features
are pooled with the point's own heatmap (softmax attention), so the slice decision is read where the point
is, and a per-point linear layer turns them into logits.

Why a volume (slices as channels) rather than 2.5D (each slice with its neighbours, scored per slice): one
forward pass per series instead of one per slice, about 10x cheaper, and slice errors well under one slice
(measured: docs/results.md#locators).
"""

from __future__ import annotations

from typing import cast

import timm
import torch
import torch.nn.functional as F
from torch import nn

from spinegrade.localization.settings import LocatorSettings
from spinegrade.localization.targets import Task


class LocatorNet(nn.Module):
    """Heatmaps (B, P, H/stride, W/stride) and, when depth > 0, slice logits (B, P, depth)."""

    def __init__(
        self,
        arch: str,
        in_chans: int,
        n_points: int,
        depth: int = 0,
        decoder_channels: int = 64,
        out_stride: int = 4,
    ) -> None:
        super().__init__()
        self.encoder = timm.create_model(arch, features_only=True, pretrained=False, in_chans=in_chans)
        info = cast(timm.models.FeatureInfo, self.encoder.feature_info)
        keep = [i for i, r in enumerate(info.reduction()) if r >= out_stride]
        if not keep or info.reduction()[keep[0]] != out_stride:
            raise ValueError(f"{arch} has no feature map at stride {out_stride}: {info.reduction()}")
        self.keep = keep
        self.out_stride = out_stride
        self.lateral = nn.ModuleList(nn.Conv2d(info.channels()[i], decoder_channels, 1) for i in keep)
        self.smooth = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(decoder_channels),
                nn.ReLU(inplace=True),
            )
            for _ in keep[:-1]
        )
        self.heatmap = nn.Conv2d(decoder_channels, n_points, 1)
        self.depth = depth
        if depth:
            self.slice_weight = nn.Parameter(torch.randn(n_points, decoder_channels, depth) * 0.02)
            self.slice_bias = nn.Parameter(torch.zeros(n_points, depth))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.encoder(x)
        y = self.lateral[-1](features[self.keep[-1]])
        for lateral, smooth, i in zip(
            reversed(self.lateral[:-1]), reversed(self.smooth), reversed(self.keep[:-1]), strict=True
        ):
            skip = lateral(features[i])
            y = smooth(F.interpolate(y, size=skip.shape[-2:], mode="nearest") + skip)
        heatmaps = self.heatmap(y)
        if not self.depth:
            return heatmaps, None
        attention = torch.softmax(heatmaps.flatten(2), dim=-1)  # (B, P, HW)
        pooled = attention @ y.flatten(2).transpose(1, 2)  # (B, P, C)
        slices = torch.einsum("bpc,pcd->bpd", pooled, self.slice_weight) + self.slice_bias
        return heatmaps, slices


def build_net(task: Task, settings: LocatorSettings) -> LocatorNet:
    """The network of a task under `settings` (used for training and, from the saved JSON, for loading)."""
    return LocatorNet(
        settings.arch,
        in_chans=settings.depth if task.volume else settings.context,
        n_points=len(task.points),
        depth=settings.depth if task.volume else 0,
        decoder_channels=settings.decoder_channels,
        out_stride=settings.out_stride,
    )
