"""One classifier for all 25 targets: a timm backbone + a head that knows the condition and the level.

Design (why one conditioned model rather than one model per condition group; decided by reasoning, not
measured): the three groups come from different series (sagittal T2, sagittal T1, axial T2) and the crop
itself shows which, so a shared backbone loses nothing by seeing all of them, while it gets three to five
times more images to learn edges, discs and canals from than a per-group model would; severity priors
differ by condition and level (L4/L5 and L5/S1 are far more often severe), which the head learns from
embeddings of the two. The default conditioning is FiLM: the condition and level embeddings scale and
shift the pooled features, so every (condition, level) gets its own read-out of the shared features (a
multiplicative interaction), where "concat" (embeddings appended to the features, then an MLP) adds them
as inputs. Inference runs one model, one batch. FiLM scored better than concat (measured:
docs/results.md#classifier).

The model takes the raw crops as the cache stores them (values in [0, 1]) and standardises them itself with
the mean and std of the training fold (buffers saved with the weights), so every user feeds the same input.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from spinegrade.models.convs import window_convs
from spinegrade.models.pretrained import create_backbone
from spinegrade.models.registry import resolve_arch
from spinegrade.vocab import CONDITIONS, LEVELS, SEVERITIES

Conditioning = Literal["film", "concat"]
CONDITIONINGS: tuple[str, ...] = ("film", "concat")
Output = Literal["softmax", "ordinal"]
OUTPUTS: tuple[str, ...] = ("softmax", "ordinal")


class OrdinalOutput(nn.Module):
    """A severity score s (B, 1) graded by two cut points c0 < c1 per (condition, level): the
    cumulative-logit model P(grade <= j) = sigmoid(c_j - s). The grades are ordered, and both a reader's
    label and the picture grade one underlying narrowing: the backbone learns one scalar where a softmax
    learns three free logits per target. Returns log-probabilities, so softmax() of them gives P(grade).
    """

    def __init__(self, n_targets: int) -> None:
        super().__init__()
        # Per target: c0 and the gap c1 - c0 before a softplus (init_cuts sets them from the priors).
        self.cuts = nn.Embedding(n_targets, 2)
        nn.init.zeros_(self.cuts.weight)

    @torch.no_grad()
    def init_cuts(self, probs: torch.Tensor) -> None:
        """Start the cut points where a score of 0 gives class probabilities `probs` (n_targets, 3)."""
        cumulative = probs[:, :2].double().cumsum(dim=1).clamp(1e-4, 1 - 1e-4)
        cuts = torch.logit(cumulative)
        gap = (cuts[:, 1] - cuts[:, 0]).clamp_min(1e-3)
        self.cuts.weight.copy_(torch.stack([cuts[:, 0], gap + torch.log(-torch.expm1(-gap))], dim=1))

    def forward(self, score: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        s = score.squeeze(1).float()
        raw = self.cuts(target).float()
        c0 = raw[:, 0]
        gap = F.softplus(raw[:, 1]).clamp_min(1e-4)
        c1 = c0 + gap
        # log P(0), log P(1), log P(2); P(1) = sigmoid(c1 - s) sigmoid(s - c0) (1 - exp(-gap)), stable
        # (not expm1: ONNX has no such operator, and gap >= 1e-4 keeps 1 - exp(-gap) exact enough).
        middle = F.logsigmoid(c1 - s) + F.logsigmoid(s - c0) + torch.log(1 - torch.exp(-gap))
        return torch.stack([F.logsigmoid(c0 - s), middle, F.logsigmoid(s - c1)], dim=1)


class ConditionedHead(nn.Module):
    """Pooled features + (condition, level) indices -> severity logits (log-probabilities when ordinal)."""

    def __init__(
        self,
        in_features: int,
        *,
        n_conditions: int,
        n_levels: int,
        n_classes: int,
        conditioning: Conditioning = "film",
        output: Output = "softmax",
        embed_dim: int = 16,
        hidden: int = 256,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if output == "ordinal" and n_classes != 3:
            raise ValueError(f"the ordinal output grades 3 classes, not {n_classes}")
        self.conditioning, self.n_levels = conditioning, n_levels
        self.condition_embedding = nn.Embedding(n_conditions, embed_dim)
        self.level_embedding = nn.Embedding(n_levels, embed_dim)
        self.dropout = nn.Dropout(drop_rate)
        n_out = 1 if output == "ordinal" else n_classes
        if conditioning == "film":
            self.film = nn.Linear(2 * embed_dim, 2 * in_features)
            self.classifier: nn.Module = nn.Linear(in_features, n_out)
        else:
            self.classifier = nn.Sequential(
                nn.Linear(in_features + 2 * embed_dim, hidden), nn.GELU(), nn.Linear(hidden, n_out)
            )
        self.ordinal = OrdinalOutput(n_conditions * n_levels) if output == "ordinal" else None

    def forward(self, features: torch.Tensor, condition: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        context = torch.cat([self.condition_embedding(condition), self.level_embedding(level)], dim=1)
        features = self.dropout(features)
        if self.conditioning == "film":
            scale, shift = self.film(context).chunk(2, dim=1)
            out = self.classifier(features * (1 + scale) + shift)
        else:
            out = self.classifier(torch.cat([features, context], dim=1))
        if self.ordinal is None:
            return out
        return self.ordinal(out, condition * self.n_levels + level)


class SpineClassifier(nn.Module):
    """backbone(standardised crops) -> global average pool -> ConditionedHead -> logits (B, n_classes).

    forward(x, condition, level): x float (B, in_chans, S, S) raw crops; condition, level int64 (B,)
    indices into vocab.CONDITIONS and vocab.LEVELS. `embed` and `head` are exposed separately so that the
    head can be fine-tuned on (possibly synthetic) features with the backbone frozen.
    """

    backbone: Any  # a timm model: forward_features and forward_head, which nn.Module does not declare
    input_mean: torch.Tensor  # buffers
    input_std: torch.Tensor

    def __init__(
        self, backbone: nn.Module, num_features: int, head: ConditionedHead, *, mean: float, std: float
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.head = head
        self.register_buffer("input_mean", torch.tensor(float(mean)))
        self.register_buffer("input_std", torch.tensor(float(std)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, num_features) of raw crops."""
        x = (x - self.input_mean) / self.input_std
        features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return features.mean(dim=(2, 3)) if features.ndim == 4 else features

    def forward(self, x: torch.Tensor, condition: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x), condition, level)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, condition: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, n_classes) in vocab.SEVERITIES order."""
        return self(x, condition, level).float().softmax(dim=1)


def create_model(
    arch: str,
    *,
    in_chans: int,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    n_conditions: int = len(CONDITIONS),
    n_levels: int = len(LEVELS),
    n_classes: int = len(SEVERITIES),
    conditioning: Conditioning = "film",
    output: Output = "softmax",
    embed_dim: int = 16,
    hidden: int = 256,
    drop_rate: float = 0.2,
    mean: float = 0.0,
    std: float = 1.0,
) -> SpineClassifier:
    """Build a SpineClassifier of a registered architecture (list_models()) or any timm model name.

    in_chans: slices per 2.5D crop (the cache's k). pretrained: ImageNet weights from the hub when online
    (otherwise a warning and random weights); weights: a local .safetensors/.pth file (wins over the hub).
    output: "softmax" (three logits) or "ordinal" (one score and two cut points per target; OrdinalOutput).
    mean/std: the input standardisation, stored in the model.
    """
    spec = resolve_arch(arch)
    backbone: Any = create_backbone(spec.timm_name, in_chans=in_chans, pretrained=pretrained, weights=weights)
    for name in spec.drop:
        setattr(backbone, name, nn.Identity())
    window_convs(backbone)  # small crops: the last stages' maps fit one kernel window (models.convs)
    # What forward_head(pre_logits=True) returns: head_hidden_size when the head has its own layers.
    num_features = backbone.num_features if spec.drop else getattr(backbone, "head_hidden_size", None)
    num_features = int(num_features or backbone.num_features)
    head = ConditionedHead(
        num_features,
        n_conditions=n_conditions,
        n_levels=n_levels,
        n_classes=n_classes,
        conditioning=conditioning,
        output=output,
        embed_dim=embed_dim,
        hidden=hidden,
        drop_rate=drop_rate,
    )
    return SpineClassifier(backbone, num_features, head, mean=mean, std=std)
