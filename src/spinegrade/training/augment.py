"""Batch-level augmentation of 2.5D MRI crops in torch (on the training device, after the batch transfer).

Per sample: a small rotation, scale and shift (one affine_grid + grid_sample for the whole batch; the same
transform for all k slices of a crop), contrast and brightness jitter and Gaussian noise. Values stay in
the cache's [0, 1] scale; the model standardises them afterwards.

Side flip (set by the architecture's recipe or `--side-flip`): mirroring a patient left <-> right turns a
left_* target into the right_* one. On axial crops (subarticular) the image columns run right -> left of
the patient, so the mirror is a horizontal flip. On sagittal crops a horizontal flip would swap anterior
and posterior, not sides; there the mirror is the reversed slice order (the k channels run along the
left-right axis), with the image itself unchanged. The spinal canal has no side: its label is kept.

Slice shift (`slice_shift`, the share of crops moved; 0 is off): the crop's k slices move by one, up or down
at random, the slice at the far end repeated, so the centre channel is a neighbour of the graded slice. It
imitates a locator that picks the next slice: the classifier sees the graded slice at another channel and
learns to find it there. The label is kept. Measured: docs/results.md#classifier-levers-at-150-studies.

Mixup (`mixup`, a Beta(alpha, alpha) draw per batch; 0 is off): each crop is blended with a partner of the
same condition group (sagittal T2, sagittal T1, axial) and the loss blends the two targets' losses with the
same weight (training.module.GradingModule). Mixup is known to resist label noise (Zhang et al., 2018),
and the readers' grades are noisy. Written here rather than taken from timm's Mixup, which mixes one-hot
targets of one label space, where each crop here is graded by its own target's read-out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from spinegrade.crops.views import axial_plane
from spinegrade.vocab import CONDITIONS, GROUP_OF_CONDITION, SIDE_OF_CONDITION

_MIRROR = {"left": "right", "right": "left"}
# Index of the condition that a left/right mirror turns each condition into.
MIRRORED_CONDITION = torch.tensor(
    [
        CONDITIONS.index(c.replace(side, _MIRROR[side], 1)) if (side := SIDE_OF_CONDITION[c]) else i
        for i, c in enumerate(CONDITIONS)
    ]
)
AXIAL_CONDITION = torch.from_numpy(axial_plane(CONDITIONS, None))  # each condition's own series is axial
GROUPS = tuple(dict.fromkeys(GROUP_OF_CONDITION.values()))
GROUP_INDEX = torch.tensor([GROUPS.index(GROUP_OF_CONDITION[c]) for c in CONDITIONS])  # condition -> group


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation (0 turns one off)."""

    rotate_deg: float = 10.0
    scale: float = 0.1
    shift: float = 0.05
    contrast: float = 0.2
    brightness: float = 0.1
    noise: float = 0.02
    side_flip: bool = False
    slice_shift: float = 0.0  # share of crops whose slices move by one (0: none)
    mixup: float = 0.0  # alpha of the Beta draw of the blend weight (0: no mixup)

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(n: int, spread: float, like: torch.Tensor) -> torch.Tensor:
    return (torch.rand(n, device=like.device, dtype=like.dtype) * 2 - 1) * spread


def side_flip(
    x: torch.Tensor, condition: torch.Tensor, flip: torch.Tensor, axial: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror the samples where `flip` (bool (B,)) is set and swap their left/right condition (module doc).
    `axial` (bool (B,)) says which crops lie in an axial plane (crops.views); None: the condition's own
    series decides."""
    if axial is None:
        axial = AXIAL_CONDITION.to(condition.device)[condition]
    mirrored = torch.where(axial[:, None, None, None], x.flip(-1), x.flip(1))
    x = torch.where(flip[:, None, None, None], mirrored, x)
    condition = torch.where(flip, MIRRORED_CONDITION.to(condition.device)[condition], condition)
    return x, condition


def shift_slices(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Crops (B, k, S, S) with channel c read from channel c + step (int (B,)), clamped to the end slices."""
    k = x.shape[1]
    source = (torch.arange(k, device=x.device)[None, :] + step[:, None]).clamp(0, k - 1)
    return torch.take_along_dim(x, source[:, :, None, None].expand_as(x), dim=1)


def augment_batch(
    x: torch.Tensor, condition: torch.Tensor, config: AugmentConfig, axial: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a float batch (B, k, S, S) of crops -> (crops, condition); flips change the condition and
    mirror each crop as its plane (`axial`, see side_flip) says."""
    n = x.shape[0]
    if config.rotate_deg or config.scale or config.shift:
        angle = _uniform(n, math.radians(config.rotate_deg), x)
        scale = 1 + _uniform(n, config.scale, x)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos, -sin, _uniform(n, config.shift, x)], dim=1),
                torch.stack([sin, cos, _uniform(n, config.shift, x)], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if config.contrast or config.brightness:
        # (x - mean) * contrast + mean + brightness, with two passes over the batch instead of four
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast = (1 + _uniform(n, config.contrast, x)).view(n, 1, 1, 1)
        x = x * contrast + (mean * (1 - contrast) + _uniform(n, config.brightness, x).view(n, 1, 1, 1))
    if config.noise:
        x = torch.add(x, torch.randn_like(x), alpha=config.noise)
    if config.slice_shift:
        moved = torch.rand(n, device=x.device) < config.slice_shift
        direction = torch.randint(0, 2, (n,), device=x.device) * 2 - 1
        x = shift_slices(x, torch.where(moved, direction, 0))
    if config.side_flip:
        x, condition = side_flip(x, condition, torch.rand(n, device=x.device) < 0.5, axial)
    return x, condition


def mix_partners(condition: torch.Tensor) -> torch.Tensor:
    """Each sample's partner (B,) int64: another random sample of its condition group, itself when alone."""
    n = condition.shape[0]
    group = GROUP_INDEX.to(condition.device)[condition]
    order = torch.randperm(n, device=condition.device)
    order = order[torch.argsort(group[order], stable=True)]  # grouped, random within a group
    grouped = group[order]
    position = torch.arange(n, device=condition.device)
    starts = torch.ones(n, dtype=torch.bool, device=condition.device)
    starts[1:] = grouped[1:] != grouped[:-1]
    first = torch.cummax(torch.where(starts, position, 0), dim=0).values  # each one's group start
    following = position + 1
    same = torch.zeros(n, dtype=torch.bool, device=condition.device)
    same[:-1] = grouped[1:] == grouped[:-1]
    partner = torch.empty_like(order)
    partner[order] = order[torch.where(same, following, first)]  # the next of the group, wrapping round
    return partner


def mixup_batch(
    x: torch.Tensor, condition: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(crops blended with their partners', partner (B,), weight): x * weight + x[partner] * (1 - weight)."""
    weight = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = mix_partners(condition)
    return torch.lerp(x[partner], x, weight), partner, weight
