"""The locator network (timm encoder, light FPN decoder, a heatmap per point, a slice head), its settings.

The decoder merges the encoder's feature maps top-down (1x1 lateral convs, nearest upsampling, one 3x3
conv per step) down to `out_stride`, then a 1x1 conv gives one heatmap per point. For volume inputs (all
slices of a sagittal series as channels) each point also gets `depth` slice logits: the decoder features
are pooled with the point's own heatmap (softmax attention), so the slice decision is read where the point
is, and a per-point linear layer turns them into logits.

Why a volume (slices as channels) rather than 2.5D (each slice with its neighbours, scored per slice): one
forward pass per series instead of one per slice. Measured on CPU (mobilenetv3_small_100, 128 px, one
thread): 10 ms per 17-slice series as a 24-channel volume vs 105 ms as 17 three-channel inputs, and 35 vs
433 ms per training sample, so 2.5D would not fit the CPU budget; the volume model reaches a mean slice
error of 0.3-0.5 slices on the phantom.

Defaults, measured on a 160-study phantom (fold 0 held out, 32 studies; 8 epochs of 256 samples per
series type): output stride 2 instead of 4 halves the in-plane error (median on the right slice 1.6-2.1
mm vs 2.9-3.9 mm; share within 5 mm 75-91% vs 50-64%) for about 1.6x the compute; 32 decoder channels
match 64 at less cost; 24 depth channels beat 16 slightly (mean slice error 0.30 vs 0.39 on Sagittal T2,
real sagittal series have 15-25 slices); resnet10t is more precise in-plane (1.4 vs 1.9 mm) but 1.8x
slower, so it is a GPU choice (`--arch resnet10t` or resnet18 with --size 256).
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from spinegrade.crops.folds import DEFAULT_FOLDS
from spinegrade.localization.targets import Task


@dataclass(frozen=True)
class LocatorSettings:
    """Everything that shapes a locator; saved in OUT/config.json and (per model) OUT/<slug>.json."""

    size: int = 128  # input side (px); every slice is resized to size x size
    depth: int = 24  # sagittal slices resampled to this many channels
    context: int = 3  # axial slices per input (the centre one and its neighbours)
    arch: str = "mobilenetv3_small_100"
    decoder_channels: int = 32
    out_stride: int = 2
    sigma: float = 1.5  # heatmap Gaussian, output pixels
    slice_sigma: float = 1.0  # slice target Gaussian, depth channels
    epochs: int = 8
    samples_per_epoch: int = 256  # drawn from the task's samples, so every task trains equally long
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    fold: int = 0
    n_folds: int = DEFAULT_FOLDS
    seed: int = 0


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
        info = self.encoder.feature_info
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
