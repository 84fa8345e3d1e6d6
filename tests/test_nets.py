"""Networks: shapes, float64, class labels, gradients, full-size parameter counts, wrappers."""

import math

import pytest
import torch
from torch import nn

from bayesgen.nets import (
    MLP,
    NETS,
    BinaryImageAdapter,
    ChannelsLastCategorical,
    ClassifierFreeGuidance,
    FourierFeatures,
    NyquistEmbedding,
    SinusoidalEmbedding,
    build_net,
    count_parameters,
)
from bayesgen.nets.bfn_unet import vdm_time_embedding
from bayesgen.nets.transformer import bfn_position_encoding

B = 2

# name -> (tiny constructor kwargs, input shape)
TINY = {
    "mlp": (dict(data_shape=(3,), hidden=16), (B, 3)),
    "toy": (dict(data_shape=(2,), hidden=16, depth=2), (B, 2)),
    "vdm_unet": (dict(width=16, n_blocks=2, groups=4, fourier_exponents=(0, 1)), (B, 3, 8, 8)),
    "bfn_vdm_unet": (dict(width=16, n_blocks=2, groups=4, fourier_exponents=(0, 1)),
                     (B, 3, 8, 8)),
    "improved_unet": (dict(in_channels=1, model_channels=32, num_res_blocks=1, num_heads=2,
                           attention_resolutions=(2,)), (B, 1, 28, 28)),
    "song_unet": (dict(resolution=8, model_channels=16, channel_mult=(1, 2), num_blocks=1,
                       attn_resolutions=(4,)), (B, 3, 8, 8)),
    "dit": (dict(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=4,
                 fourier_exponents=(0,)), (B, 3, 8, 8)),
    "transformer": (dict(vocab_size=5, seq_len=16, n_layer=2, n_head=2, n_embd=32), (B, 10, 5)),
}


def make_input(name, shape, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype)
    if name == "transformer":
        x = x.softmax(-1)
    return x, torch.rand(shape[0], generator=g, dtype=dtype)


def tiny(name, **extra):
    kwargs, shape = TINY[name]
    torch.manual_seed(0)
    net = build_net(name, **kwargs, **extra).double().eval()
    with torch.no_grad():  # move zero-initialised layers off zero so every parameter matters
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net, shape


def test_registry_is_covered():
    assert set(TINY) == set(NETS)
    with pytest.raises(ValueError, match="unknown network"):
        build_net("resnet")


@pytest.mark.parametrize("name", TINY)
def test_forward_shape_and_float64(name):
    net, shape = tiny(name)
    x, t = make_input(name, shape)
    y = net(x, t)
    assert y.shape == x.shape and y.dtype == torch.float64 and torch.isfinite(y).all()


@pytest.mark.parametrize("name", TINY)
def test_float32(name):
    kwargs, shape = TINY[name]
    x, t = make_input(name, shape, torch.float32)
    y = build_net(name, **kwargs)(x, t)
    assert y.shape == x.shape and y.dtype == torch.float32


@pytest.mark.parametrize("name", TINY)
def test_gradients_reach_every_parameter(name):
    net, shape = tiny(name, num_classes=3)
    x, t = make_input(name, shape)
    net(x, t, class_labels=torch.tensor([0, 2])).square().sum().backward()
    for pname, p in net.named_parameters():
        if pname.startswith("label_emb"):  # only the rows of the used labels get gradient
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    rows = net.label_emb.embedding.weight.grad.abs().sum(-1)
    assert (rows > 0).tolist() == [True, False, True, False]


@pytest.mark.parametrize("name", TINY)
def test_class_labels_and_null_label(name):
    net, shape = tiny(name, num_classes=3)
    x, t = make_input(name, shape)
    null = net(x, t)
    torch.testing.assert_close(net(x, t, class_labels=torch.tensor([-1, -1])), null)
    torch.testing.assert_close(net(x, t, class_labels=torch.tensor([3, 3])), null)
    y0 = net(x, t, class_labels=torch.tensor([0, 0]))
    y1 = net(x, t, class_labels=torch.tensor([1, -1]))
    assert not torch.allclose(y0, y1) and not torch.allclose(y0, null)
    torch.testing.assert_close(y1[1], null[1])

    unconditional, _ = tiny(name)
    with pytest.raises(ValueError, match="num_classes=0"):
        unconditional(x, t, class_labels=torch.tensor([0, 1]))


def test_output_channels_and_features():
    x, t = make_input("vdm_unet", (B, 3, 8, 8))
    net = build_net("vdm_unet", **TINY["vdm_unet"][0], out_channels=6).double()
    assert net(x, t).shape == (B, 6, 8, 8)
    for name in ("mlp", "toy"):
        net = build_net(name, data_shape=(3,), out_features=6).double()
        assert net(torch.randn(B, 3, dtype=torch.float64), t).shape == (B, 6)
    net = build_net("mlp", data_shape=(4, 5)).double()
    assert net(torch.randn(B, 4, 5, dtype=torch.float64), t).shape == (B, 4, 5)
    net = build_net("improved_unet", **TINY["improved_unet"][0], out_channels=2).double()
    assert net(torch.randn(B, 1, 28, 28, dtype=torch.float64), t).shape == (B, 2, 28, 28)


def test_bad_time_shape_is_refused():
    net = build_net("mlp", data_shape=(3,))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        net(torch.randn(B, 3), torch.rand(B, 1))


# Full-size parameter counts, built on the meta device (no memory) --------------------------
BFN_MNIST = dict(in_channels=1, time_scale=4000.0, time_channel=True, project_input=True,
                 skip=True)
FULL = [
    ("vdm_unet", {}, 28_093_059, 0),  # BSI's DenoisingVDMUNet (CIFAR-10)
    ("bfn_vdm_unet", {}, 30_722_188, 0),  # BFN's UNetVDM + adapters, continuous CIFAR-10
    ("bfn_vdm_unet", dict(out_channels=6), 30_722_584, 0),  # ... discretized (mean, log-std)
    ("improved_unet", BFN_MNIST, 24_808_961, 0),  # BFN's binarized-MNIST UNetModel + adapters
    ("improved_unet", dict(in_channels=1), 24_515_585, 0),  # the plain improved-diffusion net
    ("song_unet", {}, 55.7e6, 0.10),  # EDM DDPM++ CIFAR-10
    ("dit", {}, 479e6, 0.01),  # DiT-L/2 of BSI
    ("transformer", {}, 170_175_003, 0),  # BFN's text8 GPT + TextInputAdapter
    ("transformer", dict(time_embedding="sinusoidal", position_encoding="transformer"),
     170_764_059, 0),  # bayesgen's earlier text net
    ("toy", dict(data_shape=(2,)), 1.12e6, 0.10),  # IF reference ToyConvUNet (1,122,204)
]


@pytest.mark.parametrize(("name", "kwargs", "target", "rel"), FULL)
def test_full_size_parameter_count(name, kwargs, target, rel):
    with torch.device("meta"):
        net = build_net(name, **kwargs)
    assert all(p.is_meta for p in net.parameters())
    assert count_parameters(net) == pytest.approx(target, rel=rel)


def test_song_unet_matches_edm_exactly():
    with torch.device("meta"):
        assert count_parameters(build_net("song_unet")) == 55_732_739
        # EDM's augmentation-label input: a bias-free Linear(9, 128)
        assert count_parameters(build_net("song_unet", augment_dim=9)) == 55_732_739 + 9 * 128


def test_song_unet_augment_labels():
    torch.manual_seed(0)
    kwargs = dict(resolution=8, model_channels=16, channel_mult=(1, 2), num_blocks=1,
                  attn_resolutions=(4,))
    net = build_net("song_unet", augment_dim=9, **kwargs).double()
    x, t = torch.randn(B, 3, 8, 8, dtype=torch.float64), torch.rand(B, dtype=torch.float64)
    zero = torch.zeros(B, 9, dtype=torch.float64)
    torch.testing.assert_close(net(x, t, augment_labels=zero), net(x, t))  # sampling: no labels
    with torch.no_grad():
        net.out[-1].weight.normal_()  # EDM starts the output near zero
    assert not torch.allclose(net(x, t, augment_labels=zero + 1), net(x, t))
    with pytest.raises(ValueError, match="augment_dim"):
        build_net("song_unet", **kwargs)(x.float(), t.float(), augment_labels=zero.float())


# Embeddings ------------------------------------------------------------------------------
def test_fourier_features_values_and_layout():
    x = torch.tensor([[0.1, 0.3]], dtype=torch.float64)
    f = FourierFeatures((0, 2))(x)
    angles = [2 * math.pi * 0.1, 2 * math.pi * 4 * 0.1]
    expected = [math.sin(angles[0]), math.sin(angles[1]), math.cos(angles[0]), math.cos(angles[1])]
    torch.testing.assert_close(f[0, :4], torch.tensor(expected, dtype=torch.float64))
    img = torch.randn(B, 3, 4, 5)
    out = FourierFeatures((6, 7, 8))(img)
    assert out.shape == (B, 18, 4, 5)
    torch.testing.assert_close(out[:, 6 * 2], FourierFeatures((6,))(img[:, 2:3])[:, 0])


def test_sinusoidal_embedding():
    emb = SinusoidalEmbedding(8, scale=2.0, max_period=16.0)
    t = torch.tensor([0.0, 0.5], dtype=torch.float64)
    e = emb(t)
    assert e.shape == (2, 8) and e.dtype == torch.float64
    omega = 16.0 ** (-torch.arange(4, dtype=torch.float64) / 4)
    torch.testing.assert_close(e[1], torch.cat([(omega).cos(), (omega).sin()]))


# Adapters and guidance -----------------------------------------------------------------
class Recorder(nn.Module):
    """Returns scale · input and remembers the input."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x, t, class_labels=None):
        self.seen = x
        return self.scale * x


def test_channels_last_categorical_layout():
    theta = torch.rand(B, 3, 4, 5, 7, dtype=torch.float64).softmax(-1)
    adapter = ChannelsLastCategorical(Recorder())
    out = adapter(theta, torch.rand(B))
    assert adapter.net.seen.shape == (B, 21, 4, 5)
    torch.testing.assert_close(adapter.net.seen[:, 1 * 7 + 4], 2 * theta[:, 1, ..., 4] - 1)
    torch.testing.assert_close(out, 2 * theta - 1)


def test_channels_last_categorical_with_image_net():
    net = build_net("vdm_unet", in_channels=2 * 3, width=16, n_blocks=1, groups=4).double()
    theta = torch.rand(B, 2, 8, 8, 3, dtype=torch.float64).softmax(-1)
    out = ChannelsLastCategorical(net)(theta, torch.rand(B, dtype=torch.float64))
    assert out.shape == theta.shape


def test_binary_image_adapter_official_input_class():
    """BFN's official MNIST code feeds the net 2·P(class 0) − 1."""
    theta = torch.rand(B, 1, 6, 6, dtype=torch.float64)
    theta = torch.stack([1 - theta, theta], -1)
    adapter = BinaryImageAdapter(Recorder(), input_class=0)
    adapter(theta, torch.rand(B))
    torch.testing.assert_close(adapter.net.seen, 2 * theta[..., 0] - 1)
    with pytest.raises(ValueError, match="input_class"):
        BinaryImageAdapter(Recorder(), input_class=2)


def test_binary_image_adapter():
    theta = torch.rand(B, 1, 6, 6, dtype=torch.float64)
    theta = torch.stack([1 - theta, theta], -1)
    adapter = BinaryImageAdapter(Recorder(scale=3.0))
    logits = adapter(theta, torch.rand(B))
    log_odds = 3.0 * (2 * theta[..., 1] - 1)
    torch.testing.assert_close(adapter.net.seen, 2 * theta[..., 1] - 1)
    assert logits.shape == theta.shape
    torch.testing.assert_close(logits.softmax(-1)[..., 1], torch.sigmoid(log_odds))
    torch.testing.assert_close(logits.sum(-1), torch.zeros_like(log_odds))
    with pytest.raises(ValueError, match="K = 2"):
        adapter(torch.rand(B, 1, 6, 6, 3), torch.rand(B))


def test_classifier_free_guidance():
    net, _ = tiny("mlp", num_classes=3)
    x, t = make_input("mlp", (B, 3))
    y = torch.tensor([0, 2])
    torch.testing.assert_close(ClassifierFreeGuidance(net, 0.0)(x, t, class_labels=y),
                               net(x, t, class_labels=y))
    torch.testing.assert_close(ClassifierFreeGuidance(net, 2.0)(x, t), net(x, t))
    w = 1.5
    expected = (1 + w) * net(x, t, class_labels=y) - w * net(x, t, class_labels=-torch.ones_like(y))
    torch.testing.assert_close(ClassifierFreeGuidance(net, w)(x, t, class_labels=y), expected)


def test_nyquist_embedding():
    """BSI's time embedding: interleaved sin/cos of 2π·f·t, f geometric from 1/8 to 50/(2φ)."""
    e = NyquistEmbedding(8, expected_rate=100)(torch.tensor([0.0, 0.3], dtype=torch.float64))
    golden = (1 + math.sqrt(5)) / 2
    f = torch.logspace(math.log10(1 / 8), math.log10(50 / (2 * golden)), 4, dtype=torch.float64)
    angle = 2 * math.pi * f * 0.3
    torch.testing.assert_close(e[1, 0::2], angle.sin(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(e[1, 1::2], angle.cos(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(e[0], torch.tensor([0.0, 1.0] * 4, dtype=torch.float64))


def test_vdm_time_embedding():
    """VDM's embedding of 1000·(t + 0.001): frequencies 10⁴^(−i/(half − 1)), sines first."""
    e = vdm_time_embedding(torch.tensor([0.5], dtype=torch.float64), 8)
    omega = 10_000.0 ** (-torch.arange(4, dtype=torch.float64) / 3)
    angle = 1000 * 0.501 * omega
    torch.testing.assert_close(e[0], torch.cat([angle.sin(), angle.cos()]))


def test_bfn_position_encoding():
    """BFN's pe_encode: sin(p/1000^(j/D)) at even j, cos(p/1000^(j/D)) at odd j."""
    pe = bfn_position_encoding(5, 6)
    for p, j in ((3, 2), (4, 3), (1, 0)):
        angle = p / 1000 ** (j / 6)
        expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
        assert pe[p, j].item() == pytest.approx(expected, rel=1e-6)


def test_text_net_time_input_is_linear_in_t():
    """The official TextInputAdapter adds Linear(2t − 1) to every token: linear in t."""
    net = build_net("transformer", **TINY["transformer"][0]).double().eval()
    x, _ = make_input("transformer", TINY["transformer"][1])
    ts = [torch.full((B,), v, dtype=torch.float64) for v in (0.2, 0.5, 0.8)]
    tokens = []
    hook = net.drop.register_forward_hook(lambda m, i, o: tokens.append(i[0]))
    for t in ts:
        net(x, t)
    hook.remove()
    torch.testing.assert_close(tokens[1] - tokens[0], tokens[2] - tokens[1])


def test_bfn_mnist_unet_options():
    """Time channel, input projection and the skip head of BFN's official MNIST net: at
    initialisation (output conv zero) the output is the head applied to the projected
    [x, 2t − 1]."""
    torch.manual_seed(0)
    net = build_net("improved_unet", in_channels=1, model_channels=32, num_res_blocks=1,
                    num_heads=2, time_channel=True, project_input=True, skip=True).double()
    x = torch.randn(B, 1, 28, 28, dtype=torch.float64)
    t = torch.tensor([0.1, 0.7], dtype=torch.float64)
    plane = (2 * t - 1).view(B, 1, 1, 1).expand(B, 1, 28, 28)
    projected = net.project(torch.cat([x, plane], dim=1))
    zeros = torch.zeros(B, 32, 28, 28, dtype=torch.float64)
    expected = net.head(torch.cat([projected, zeros], dim=1))
    torch.testing.assert_close(net(x, t), expected)
    assert net.project.in_channels == 2 and net.head.in_channels == 64


def test_bfn_vdm_unet_head_sees_the_input():
    """BFN's output adapter maps [input, features] per pixel; at initialisation the features
    are zero (zero-initialised output conv), so the output is affine in the input."""
    torch.manual_seed(0)
    net = build_net("bfn_vdm_unet", **TINY["bfn_vdm_unet"][0], out_channels=6).double()
    x, t = make_input("bfn_vdm_unet", (B, 3, 8, 8))
    zeros = torch.zeros(B, 16, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(net(x, t), net.head(torch.cat([x, zeros], dim=1)))
    assert len(net.up) == len(net.down) + 1  # 33 up blocks for 32 down blocks


def test_mlp_out_channels_and_dropout():
    net = MLP((1, 8, 8), hidden=16, depth=1, fourier_exponents=[], out_channels=2, dropout=0.5)
    assert net(torch.zeros(3, 1, 8, 8), torch.zeros(3)).shape == (3, 2, 8, 8)
    assert any(isinstance(m, nn.Dropout) for m in net.modules())
    plain = MLP((1, 8, 8), hidden=16, depth=1, fourier_exponents=[])
    # no dropout: no Dropout modules, so the state dicts of earlier MLPs still load
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    assert list(plain.state_dict()) == ["layers.0.weight", "layers.0.bias", "layers.2.weight",
                                        "layers.2.bias"]
    with pytest.raises(ValueError, match="dropout"):
        MLP((1, 8, 8), dropout=1.0)
    with pytest.raises(ValueError, match="channel"):
        MLP((4,), out_channels=2)
