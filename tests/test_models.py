"""spinegrade.models: registry, conditioned head, pretrained weights (offline fallback, local files)."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv

from spinegrade.errors import DataError
from spinegrade.models import create_model, list_models
from spinegrade.models import pretrained as pretrained_module
from spinegrade.models.pretrained import PretrainedWeightsWarning, hub_offline, hub_reachable
from spinegrade.onnxrt import export_classifier

K = 5


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and are not slowed down by a busy machine's other threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("arch", ["vgg16", "densenet121", "efficientnet_b0", "efficientnetv2_s"])
def test_each_family_grades_k_slice_crops_and_its_head_uses_the_condition(arch: str) -> None:
    torch.manual_seed(0)
    model = create_model(arch, in_chans=K).eval()
    assert _first_conv(model).in_channels == K
    x = torch.rand(2, K, 32, 32)
    level = torch.tensor([3, 3])
    with torch.no_grad():
        out = model(x, torch.tensor([0, 0]), level)
        other = model(x, torch.tensor([1, 1]), level)
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    # The head knows the condition: the same crops graded as another condition give other logits.
    assert not torch.allclose(out, other)


def test_registry_has_the_required_names_and_passes_timm_names_through() -> None:
    required = {"vgg16", "densenet121", "efficientnetv2_s", *(f"efficientnet_b{i}" for i in range(5))}
    assert required <= set(list_models())
    for arch in ("efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4"):
        assert _first_conv(create_model(arch, in_chans=K)).in_channels == K
    model = create_model("test_efficientnet", in_chans=3)
    assert _first_conv(model).in_channels == 3
    with pytest.raises(DataError, match="no_such_net"):
        create_model("no_such_net", in_chans=3)


def test_vgg_drops_its_224px_fully_connected_pre_logits() -> None:
    model = create_model("vgg16", in_chans=3)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 20_000_000  # features only; timm's pre_logits alone would add 120M
    assert model.num_features == 512


@pytest.mark.parametrize("conditioning", ["film", "concat"])
def test_level_changes_the_output_for_both_conditionings(conditioning: str) -> None:
    torch.manual_seed(0)
    model = create_model("test_efficientnet", in_chans=3, conditioning=conditioning).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = model(x, torch.tensor([2]), torch.tensor([0]))
        b = model(x, torch.tensor([2]), torch.tensor([4]))
    assert not torch.allclose(a, b)


def test_model_standardises_its_input_with_the_stored_statistics() -> None:
    torch.manual_seed(0)
    model = create_model("test_efficientnet", in_chans=3, mean=0.5, std=0.25).eval()
    reference = create_model("test_efficientnet", in_chans=3).eval()
    reference.load_state_dict(
        {**model.state_dict(), "input_mean": torch.tensor(0.0), "input_std": torch.tensor(1.0)}
    )
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.embed(x), reference.embed((x - 0.5) / 0.25), atol=1e-5)


def test_offline_pretrained_warns_at_once_and_trains_from_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.warns(PretrainedWeightsWarning, match="no network"):
        model = create_model("efficientnet_b0", in_chans=K, pretrained=True)
    assert time.perf_counter() - started < 5
    assert _first_conv(model).in_channels == K


def test_unreachable_hub_is_detected_quickly_and_sets_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.perf_counter()
    assert not hub_reachable("hub.invalid", 443, timeout=0.5)  # .invalid never resolves (RFC 6761)

    release = threading.Event()

    def hang(*args: object, **kwargs: object) -> None:
        release.wait(10)  # until the test is done, then fail as a real connection would
        raise TimeoutError("fake connection timed out")

    monkeypatch.setattr(pretrained_module.socket, "create_connection", hang)
    try:
        assert not hub_reachable(timeout=0.5)  # a connection that hangs is given up after the timeout
        assert time.perf_counter() - started < 2
    finally:
        release.set()  # the checker's thread ends now, inside this test, with an OSError it handles
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(pretrained_module, "hub_reachable", lambda: False)
    assert hub_offline()
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_local_weights_are_loaded_and_the_first_conv_adapted(tmp_path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("test_efficientnet", in_chans=3)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    for suffix in (".safetensors", ".pth"):
        path = tmp_path / f"weights{suffix}"
        if suffix == ".safetensors":
            save_file(state, str(path))
        else:
            torch.save(state, path)
        model = create_model("test_efficientnet", in_chans=K, weights=path)
        loaded = model.backbone.state_dict()
        assert torch.allclose(loaded["conv_stem.weight"], adapt_input_conv(K, state["conv_stem.weight"]))
        assert torch.equal(loaded["blocks.0.0.conv.weight"], state["blocks.0.0.conv.weight"])


class _NotWeights:
    """An arbitrary object: unpickling it would run code, so weights_only loading must refuse it."""


def test_pickled_or_missing_weight_files_are_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": _NotWeights()}, path)
    with pytest.raises(DataError, match=r"evil\.pth"):
        create_model("test_efficientnet", in_chans=3, weights=path)
    with pytest.raises(DataError, match="does not exist"):
        create_model("test_efficientnet", in_chans=3, weights=tmp_path / "missing.safetensors")


@pytest.mark.parametrize("conditioning", ["film", "concat"])
def test_ordinal_output_gives_ordered_grades_that_start_at_the_priors(conditioning: str) -> None:
    torch.manual_seed(0)
    model = create_model("test_efficientnet", in_chans=3, conditioning=conditioning, output="ordinal").eval()
    ordinal = model.head.ordinal
    assert ordinal is not None
    priors = torch.distributions.Dirichlet(torch.ones(3)).sample((25,))
    ordinal.init_cuts(priors)
    x, condition, level = (
        torch.rand(6, 3, 32, 32),
        torch.tensor([0, 1, 2, 3, 4, 4]),
        torch.tensor([0, 1, 2, 3, 4, 0]),
    )
    with torch.no_grad():
        probs = model.predict_proba(x, condition, level)
        # A score of 0 gives each target's priors back: the cut points start where the fold's labels are.
        at_zero = ordinal(torch.zeros(6, 1), condition * 5 + level).softmax(dim=1)
    assert torch.allclose(probs.sum(dim=1), torch.ones(6), atol=1e-5)
    assert torch.allclose(at_zero, priors[condition * 5 + level].float(), atol=1e-3)
    # A higher score moves mass from Normal/Mild to Severe, monotonically (the grades are ordered).
    scores = torch.linspace(-6, 6, 13)[:, None]
    graded = ordinal(scores, torch.full((13,), 7)).softmax(dim=1)
    assert (graded[1:, 0] <= graded[:-1, 0] + 1e-6).all() and (graded[1:, 2] >= graded[:-1, 2] - 1e-6).all()
    # Trainable end to end: the loss reaches the backbone.
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x, condition, level), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    assert _first_conv(model).weight.grad is not None and torch.isfinite(loss)
    # It exports to ONNX (predict's bundles) and runs there as in torch (export_classifier checks the two).
    _, worst = export_classifier(model.eval(), 3, 32)
    assert worst < 1e-4
    with pytest.raises(ValueError, match="output"):
        create_model("test_efficientnet", in_chans=3, output="cumulative")


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "groups", "stride", "size", "shortcut"),
    [
        (8, 6, 1, 1, (1, 1), True),  # resnet's last stage at 32 px: the centre tap only
        (8, 6, 1, 2, (2, 2), True),  # its first conv, 2 x 2 -> 1 x 1: the lower right 2 x 2 taps
        (6, 6, 6, 1, (1, 1), True),  # depthwise (efficientnet)
        (8, 6, 1, 2, (1, 2), True),  # not square
        (8, 6, 1, 1, (2, 2), False),  # two output positions per side: the full kernel, as timm built it
        (8, 6, 1, 1, (5, 5), False),
    ],
)
def test_window_conv_gives_the_full_kernels_outputs_and_gradients(
    monkeypatch: pytest.MonkeyPatch,
    in_ch: int,
    out_ch: int,
    groups: int,
    stride: int,
    size: tuple[int, int],
    shortcut: bool,
) -> None:
    from spinegrade.models.convs import WindowConv2d, window_convs

    torch.manual_seed(0)
    plain = torch.nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups)
    window = window_convs(torch.nn.Sequential(copy.deepcopy(plain)))[0]
    assert type(window) is WindowConv2d and window.weight.shape == plain.weight.shape
    x = torch.randn(3, in_ch, *size)
    outputs, grads = [], []
    for conv in (plain, window):
        xi = x.clone().requires_grad_(True)
        out = conv(xi)
        out.pow(2).sum().backward()
        outputs.append(out)
        grads.append((xi.grad, conv.weight.grad, conv.bias.grad))
    torch.testing.assert_close(outputs[1], outputs[0])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want)
    full_kernel_calls: list[int] = []
    full = torch.nn.Conv2d._conv_forward
    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", lambda *a: full_kernel_calls.append(1) or full(*a))
    window(x)
    assert (not full_kernel_calls) == shortcut


def test_classifier_convs_take_the_window_path_and_keep_timms_state_dict() -> None:
    from spinegrade.models.convs import WindowConv2d

    model = create_model("resnet18", in_chans=K)
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(type(m) is WindowConv2d for m in convs)
    timm_keys = set(timm.create_model("resnet18", in_chans=K, num_classes=0).state_dict())
    assert {k.removeprefix("backbone.") for k in model.state_dict() if k.startswith("backbone.")} == timm_keys
