"""Registered architectures and their blocks: shapes, gradients, switches, identities (CPU, tiny sizes)."""

from __future__ import annotations

import pytest
import torch

from SpineSegLib.networks import available_architectures, build_network
from SpineSegLib.networks.blocks import (
    MASAG,
    AdaptiveWindowAttention,
    AttentionGate,
    DomainConditioner,
    MultiScaleFusion,
    boxes_from_mask,
    roi_align3d,
)

NUM_CLASSES, NUM_LESION = 6, 3
_VIT = dict(feature_size=8, hidden_size=32, num_layers=4, num_heads=2, mlp_dim=64, img_size=32)
_UNET = dict(channels=(8, 16, 32))
# Swin: batch norm and batch 2, because at 32³ the bottleneck is 1³ and instance norm needs > 1 voxel.
_SWIN = dict(feature_size=12, depths=(2, 1, 1, 1), num_heads=(1, 2, 4, 8), norm_name="batch")
_VF = dict(_VIT, num_layers=3, roi_size=2, id_hidden=16, num_domains=3, domain_dim=8)

# id -> (tiny arch args, input size, batch)
TINY = {
    "cnn3d": (_UNET, 16, 1),
    "unet3d": (dict(channels=(8, 16, 32)), 16, 1),
    "unet3d_transformer": (dict(_UNET, num_layers=1, num_heads=2), 16, 1),
    "unet_masag": (_UNET, 16, 1),
    "swin_unetr": (_SWIN, 32, 2),
    "swin_unetr_msf_aa": (_SWIN, 32, 2),
    "unetr": (_VIT, 32, 1),
    "unetr_ag": (_VIT, 32, 1),
    "unetr_masag": (_VIT, 32, 1),
    "vertebraformer": (_VF, 32, 1),
}
BOXES = [torch.tensor([[0.0, 0, 0, 16, 16, 16], [10, 4, 6, 30, 28, 31]])]

# Parameters of the new components that must receive a non-zero gradient, by name fragment.
NEW_PARAMS = {
    "swin_unetr_msf_aa": ["fusion_logits", "log_temperature", "attn.context"],
    "unetr_ag": ["gamma"],
    "unetr_masag": ["gate1.", "gate2."],
    "unet_masag": [".gate."],
    "vertebraformer": ["modulation.", "domain.prototypes", "domain.classifier", "domain.project", "id_classifier",
                       "lesion_out.offset", "lesion_out.log_size", "lesion_out.heatmap"],
}


def build(arch_id: str, num_classes: int = NUM_CLASSES, **overrides):
    torch.manual_seed(0)
    args, _, _ = TINY[arch_id]
    return build_network(arch_id, 1, num_classes, NUM_LESION, **{**args, **overrides})


def tiny_input(arch_id: str) -> torch.Tensor:
    _, size, batch = TINY[arch_id]
    torch.manual_seed(1)
    return torch.randn(batch, 1, size, size, size)


def run(net, arch_id: str, x: torch.Tensor, **kwargs) -> dict:
    if arch_id == "vertebraformer":
        kwargs.setdefault("boxes", BOXES * x.shape[0])
    return net(x, **kwargs)


def backward_all(out: dict) -> None:
    # Every tensor output contributes, with a different weight, so every head is exercised.
    loss = sum((i + 1) * v.float().square().mean() for i, v in enumerate(out.values()) if torch.is_tensor(v))
    loss.backward()


def test_every_architecture_registered():
    assert set(TINY) <= set(available_architectures())


@pytest.mark.parametrize("arch_id", sorted(TINY))
def test_forward_backward_shapes_and_gradients(arch_id):
    net = build(arch_id)
    assert isinstance(net.size_divisor, int) and TINY[arch_id][1] % net.size_divisor == 0
    x = tiny_input(arch_id)
    out = run(net, arch_id, x)
    b, spatial = x.shape[0], x.shape[2:]
    assert out["seg"].shape == (b, NUM_CLASSES, *spatial)
    assert out["lesion"].shape == (b, NUM_LESION, *spatial)
    if arch_id == "vertebraformer":
        assert out["mask"].shape == (b, 1, *spatial)
        assert out["offset"].shape == out["log_size"].shape == (b, 3, *spatial)
        assert out["id_logits"].shape == (2, NUM_CLASSES - 1)
        assert out["domain_logits"].shape == (b, 3) and out["domain_embedding"].shape == (b, 8)
    backward_all(out)
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
    for fragment in NEW_PARAMS.get(arch_id, []):
        params = [(n, p) for n, p in net.named_parameters() if fragment in n]
        assert params, fragment
        for name, p in params:
            assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("arch_id", sorted(TINY))
def test_real_class_count(arch_id):
    """28 classes (background + 27 vertebrae) and 3 lesion classes, as the label table has."""
    net = build(arch_id, num_classes=28).eval()
    with torch.no_grad():
        out = run(net, arch_id, tiny_input(arch_id))
    assert out["seg"].shape[1] == 28 and out["lesion"].shape[1] == NUM_LESION
    assert out["lesion"].mean() < -3  # lesion logits start at the rare-lesion prior (LESION_PRIOR_LOGIT)
    if arch_id == "vertebraformer":
        assert out["id_logits"].shape == (2, 27)


def _differs(arch_id: str, on: dict, off: dict) -> None:
    """The switch changes the module graph, and (with shared weights copied) the outputs."""
    net_on, net_off = build(arch_id, **on), build(arch_id, **off)
    names_on, names_off = set(dict(net_on.named_parameters())), set(dict(net_off.named_parameters()))
    assert names_on != names_off
    net_off.load_state_dict(net_on.state_dict(), strict=False)
    x = tiny_input(arch_id)
    with torch.no_grad():
        out_on, out_off = run(net_on.eval(), arch_id, x), run(net_off.eval(), arch_id, x)
    same_keys = set(out_on) == set(out_off)
    assert not same_keys or not all(torch.equal(out_on[k], out_off[k]) for k in out_on if torch.is_tensor(out_on[k]))


@pytest.mark.parametrize("switch", ["multiscale_fusion", "adaptive_attention"])
def test_swin_switches(switch):
    _differs("swin_unetr_msf_aa", {}, {switch: False})


def test_swin_both_off_is_plain_swin_unetr():
    plain = build("swin_unetr")
    off = build("swin_unetr_msf_aa", multiscale_fusion=False, adaptive_attention=False)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in off.state_dict().items()}
    assert [type(m) for m in plain.modules()] == [type(m) for m in off.modules()]


@pytest.mark.parametrize("switch", ["identification", "lesion_head", "domain_modulation"])
def test_vertebraformer_switches(switch):
    _differs("vertebraformer", {}, {switch: False})


def test_vertebraformer_all_off_is_plain_segmenter():
    net = build("vertebraformer", identification=False, lesion_head=False, domain_modulation=False)
    out = net(tiny_input("vertebraformer"), boxes=BOXES)
    assert set(out) == {"seg", "mask", "lesion"}


def test_vertebraformer_domain_and_mask_boxes():
    net = build("vertebraformer").eval()
    x = tiny_input("vertebraformer")
    with torch.no_grad():
        given = net(x, domain=torch.tensor([1]))
        unknown = net(x)
        auto = net(x, boxes="mask")
    assert not torch.equal(given["seg"], unknown["seg"])  # the prototype mix differs from prototype 1
    assert isinstance(auto["id_boxes"], list) and auto["id_logits"].shape[0] == auto["id_boxes"][0].shape[0]


def test_domain_conditioner_prototypes():
    torch.manual_seed(0)
    cond = DomainConditioner(in_features=5, num_domains=3, embed_dim=4)
    pooled = torch.randn(2, 5)
    e, logits, z = cond(pooled, torch.tensor([2, 0]))
    assert torch.equal(e, cond.prototypes[[2, 0]]) and logits.shape == (2, 3) and z.shape == (2, 4)
    e_mix, logits, _ = cond(pooled)
    assert torch.allclose(e_mix, torch.softmax(logits, 1) @ cond.prototypes)


@pytest.mark.parametrize("on,off", [({"gate": "ag", "version": 1}, {"gate": None}),
                                    ({"gate": "ag", "version": 2}, {"gate": "ag", "version": 1}),
                                    ({"gate": "masag"}, {"gate": "ag"})])
def test_unetr_ag_switches_change_graph(on, off):
    net_on, net_off = build("unetr_ag", **on), build("unetr_ag", **off)
    assert set(dict(net_on.named_parameters())) != set(dict(net_off.named_parameters()))


def test_unetr_ag_v1_changes_output():
    _differs("unetr_ag", {"gate": "ag", "version": 1}, {"gate": None})


def test_unetr_ag_v2_gate_is_identity_at_init():
    gated = build("unetr_ag", version=2).eval()
    plain = build("unetr").eval()
    plain.load_state_dict(gated.state_dict(), strict=False)
    x = tiny_input("unetr_ag")
    with torch.no_grad():
        assert torch.equal(gated(x)["seg"], plain(x)["seg"])
    gate = AttentionGate(4, 8, residual=True)
    skip, signal = torch.randn(1, 4, 8, 8, 8), torch.randn(1, 8, 4, 4, 4)
    assert torch.equal(gate(skip, signal), skip)
    with torch.no_grad():
        gate.gamma.fill_(1.0)
    assert not torch.equal(gate(skip, signal), skip)


def test_unetr_ag_v2_gate_learns_once_gamma_moves():
    net = build("unetr_ag", version=2)
    with torch.no_grad():
        net.gate1.gamma.fill_(0.5)
        net.gate2.gamma.fill_(0.5)
    backward_all(net(tiny_input("unetr_ag")))
    for name, p in net.named_parameters():
        if name.startswith("gate") and name.endswith("weight"):
            assert p.grad.abs().sum() > 0, name


def test_unet_masag_switch():
    _differs("unet_masag", {}, {"masag": False})


def test_masag_shape_and_residual_selection():
    torch.manual_seed(0)
    masag = MASAG(4, 6)
    x, g = torch.rand(2, 4, 8, 8, 8) + 0.1, torch.randn(2, 6, 4, 4, 4)
    assert masag(x, g).shape == x.shape  # g of other channels and resolution is aligned to x
    g = masag.align(x, g)
    x_sel, g_sel, w = masag.select(x, g)
    assert w.shape == (2, 2, 8, 8, 8) and torch.allclose(w.sum(1), torch.ones(2, 8, 8, 8))
    assert torch.allclose(x_sel, x * (1 + w[:, :1])) and torch.allclose(g_sel, g * (1 + w[:, 1:]))
    assert (x_sel >= x).all() and (x_sel <= 2 * x).all()  # residual: the skip is kept, at most doubled


def test_multiscale_fusion_weights_and_shape():
    fusion = MultiScaleFusion(4)
    assert torch.allclose(fusion.branch_weights(), torch.full((4,), 0.25))
    x = torch.randn(1, 4, 8, 8, 8)
    assert fusion(x).shape == x.shape


def test_adaptive_attention_reduces_to_window_attention():
    from monai.networks.nets.swin_unetr import WindowAttention

    torch.manual_seed(0)
    plain = WindowAttention(8, 2, (2, 2, 2), qkv_bias=True)
    adaptive = AdaptiveWindowAttention(8, 2, (2, 2, 2), qkv_bias=True)
    adaptive.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(3, 8, 8)
    assert not torch.allclose(adaptive(x, None), plain(x, None), atol=1e-7)  # context net is live
    with torch.no_grad():
        adaptive.context[-1].weight.zero_()  # temperature exactly 1: plain window attention
    assert torch.allclose(adaptive(x, None), plain(x, None), atol=1e-6)
    with torch.no_grad():
        adaptive.log_temperature.fill_(1.0)
    assert not torch.allclose(adaptive(x, None), plain(x, None), atol=1e-4)


def test_roi_align3d_samples_linear_ramp_exactly():
    d = torch.arange(16.0).view(1, 1, 16, 1, 1).expand(1, 1, 16, 16, 16)  # value = voxel index along depth
    w = torch.arange(16.0).view(1, 1, 1, 1, 16).expand(1, 1, 16, 16, 16)
    features = torch.cat([d, w], 1)
    boxes = torch.tensor([[2.0, 0, 4, 10, 16, 8]])  # depth 2..10, width 4..8 (voxel edges)
    pooled = roi_align3d(features, [boxes], output_size=2, image_size=(16, 16, 16), sampling_ratio=2)
    assert pooled.shape == (1, 2, 2, 2, 2)
    # Bin centres along depth: 4 and 8 in edge coordinates → voxel-index values 3.5 and 7.5.
    assert torch.allclose(pooled[0, 0, :, 0, 0], torch.tensor([3.5, 7.5]))
    assert torch.allclose(pooled[0, 1, 0, 0, :], torch.tensor([4.5, 6.5]))
    # A half-resolution map of the same ramp, same boxes in input voxels (coordinates are normalised): same values.
    half = roi_align3d(torch.nn.functional.avg_pool3d(features, 2), [boxes], 2, (16, 16, 16), 2)
    assert torch.allclose(half, pooled)


def test_roi_align3d_tensor_boxes_keep_order():
    features = torch.randn(2, 3, 8, 8, 8)
    a, b = torch.tensor([0.0, 0, 0, 4, 4, 4]), torch.tensor([2.0, 2, 2, 8, 8, 8])
    as_list = roi_align3d(features, [a[None], b[None]], 2, (8, 8, 8))
    as_tensor = roi_align3d(features, torch.stack([torch.cat([torch.ones(1), b]), torch.cat([torch.zeros(1), a])]),
                            2, (8, 8, 8))
    assert torch.allclose(as_tensor[0], as_list[1]) and torch.allclose(as_tensor[1], as_list[0])


def test_boxes_from_mask():
    logits = torch.full((1, 1, 10, 10, 10), -5.0)
    logits[0, 0, 1:3, 2:5, 2:5] = 5
    logits[0, 0, 6:9, 1:4, 5:9] = 5
    logits[0, 0, 0, 9, 9] = 5  # one voxel: dropped by min_voxels
    (boxes,) = boxes_from_mask(logits, min_voxels=2)
    assert boxes.tolist() == [[1, 2, 2, 3, 5, 5], [6, 1, 5, 9, 4, 9]]


def test_model_table_rows_and_markdown():
    from spineseg_train.model_table import format_model_table, model_table

    rows = model_table(["unet3d", "unetr"], arch_args={"unet3d": _UNET, "unetr": _VIT}, flops_size=32,
                       latency_size=16, latency_runs=1, gpu=False)
    assert [r["id"] for r in rows] == ["unet3d", "unetr"]
    assert all(r["params_m"] > 0 and r["gflops"] > 0 and r["cpu_latency_s"] > 0 for r in rows)
    assert rows[1]["latency_size"] == 16  # already a multiple of the ViT patch size
    table = format_model_table(rows)
    assert table.startswith("| architecture |") and "`unetr`" in table
