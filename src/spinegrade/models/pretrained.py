"""Backbones with ImageNet weights: from the Hugging Face hub when it is reachable, or from a local file.

Without network the hub would retry for minutes; instead a 1.5 s connection check decides at once, sets
HF_HUB_OFFLINE=1 and the model is trained from scratch with a PretrainedWeightsWarning. Local files
(.safetensors, or .pth read with torch.load(weights_only=True): never unpickled) go through timm's own
loader, which adapts the first convolution to the number of input channels (timm.models.adapt_input_conv)
and drops the ImageNet classifier.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinegrade.errors import DataError

if TYPE_CHECKING:
    from torch import nn

HUB_HOST = "huggingface.co"
HUB_PORT = 443
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class PretrainedWeightsWarning(UserWarning):
    """Pretrained weights were asked for but cannot be had: the model starts from random weights."""


def hub_reachable(host: str = HUB_HOST, port: int = HUB_PORT, timeout: float = 1.5) -> bool:
    """Whether a TLS connection to host:port (certificate checked) opens within `timeout` s, DNS included.

    TLS rather than TCP alone: sandboxes may accept any TCP connection without reaching the internet.
    """
    result: list[bool] = []

    def connect() -> None:
        try:
            with (
                socket.create_connection((host, port), timeout=timeout) as raw,
                ssl.create_default_context().wrap_socket(raw, server_hostname=host),
            ):
                result.append(True)
        except OSError:  # includes DNS, TLS and certificate errors
            result.append(False)

    # getaddrinfo ignores socket timeouts, so the whole check runs in a thread we stop waiting for.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hub_offline() -> bool:
    """True when the hub cannot be used: HF_HUB_OFFLINE is set, or the check fails (then it sets it)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    return True


def load_weights_file(path: str | os.PathLike[str]) -> dict:
    """State dict of a .safetensors file or a torch file (read with weights_only=True); DataError names it."""
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file {path} does not exist; pass a .safetensors or .pth file")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise DataError(f"weights file {path}: expected one of {', '.join(WEIGHT_SUFFIXES)}")
    try:
        return load_state_dict(str(path), weights_only=True)
    except Exception as e:  # safetensors/torch raise many types for a corrupt or pickled file
        raise DataError(
            f"weights file {path} cannot be read as a plain state dict ({type(e).__name__}: {e}); "
            "pickled checkpoints with code objects are refused: save model.state_dict() instead"
        ) from None


def create_backbone(
    timm_name: str, *, in_chans: int, pretrained: bool = False, weights: str | os.PathLike[str] | None = None
) -> nn.Module:
    """timm.create_model(timm_name, in_chans=in_chans, num_classes=0) with weights from `weights`, the hub
    (pretrained=True, when reachable) or random (pretrained=False, or hub unreachable: warned)."""
    import timm

    kwargs: dict[str, Any] = {"in_chans": in_chans, "num_classes": 0}
    if weights is not None:
        state_dict = load_weights_file(weights)
        try:
            return timm.create_model(
                timm_name, pretrained=True, pretrained_cfg_overlay={"state_dict": state_dict}, **kwargs
            )
        except RuntimeError as e:
            raise DataError(f"weights file {weights} does not fit {timm_name}: {e}") from None
    if not pretrained:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    if hub_offline():
        warnings.warn(
            f"pretrained ImageNet weights for {timm_name} cannot be downloaded: no network "
            f"({HUB_HOST}:{HUB_PORT} unreachable or HF_HUB_OFFLINE=1); training from scratch. "
            "Pass --weights PATH (.safetensors or .pth) to start from a local copy.",
            PretrainedWeightsWarning,
            stacklevel=3,
        )
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    try:
        return timm.create_model(timm_name, pretrained=True, **kwargs)
    except Exception as e:  # hub errors (HTTP, auth, no weights for this name) all mean: start from scratch
        warnings.warn(
            f"pretrained weights for {timm_name} could not be loaded ({type(e).__name__}: {e}); "
            "training from scratch",
            PretrainedWeightsWarning,
            stacklevel=3,
        )
        return timm.create_model(timm_name, pretrained=False, **kwargs)
