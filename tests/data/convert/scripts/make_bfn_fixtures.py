"""Make bayesgen's bfn-official conversion fixtures with the official BFN code (run outside
bayesgen): tiny networks, random weights, the official BFN(...).state_dict() saved with
torch.save, and the official network's outputs on fixed inputs."""
import math, sys
from pathlib import Path
import torch
REF = Path(sys.argv[1]); OUT = Path(sys.argv[2]); OUT.mkdir(parents=True, exist_ok=True)
sys.path.insert(0, str(REF))
from networks.unet_improved import UNetModel
from networks.unet_vdm import UNetVDM
from networks.transformer import GPT
from networks.adapters import FourierImageInputAdapter, OutputAdapter, TextInputAdapter
from model import BFN, DiscreteBayesianFlow, DiscreteBayesianFlowLoss, CtsBayesianFlow, CtsBayesianFlowLoss
from probability import BernoulliFactory, CategoricalFactory, DiscretizedNormalFactory, DeltaFactory

def randomize(net, g):
    """Random weights on a coarse grid (few distinct values: the files compress well), rounded
    to float16, in which they are saved; the outputs are computed in float32."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            z = torch.round(4 * torch.randn(p.shape, generator=g)).clamp(-12, 12) / 4
            if p.ndim >= 2:
                p.copy_(z / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * z)
            else:
                p.copy_(0.1 * z)
            p.copy_(p.half().float())

def reference_loss(bfn, data, t, noise):
    """The official BFN.forward (continuous-time loss, mean over batch and dimensions) with
    its Gaussian draws replaced by `noise` (torch.randn in CtsBayesianFlow, Normal.rsample in
    DiscreteBayesianFlow)."""
    import torch.distributions.normal as normal
    randn, standard_normal = torch.randn, normal._standard_normal
    torch.randn = lambda *a, **k: noise.clone()
    normal._standard_normal = lambda *a, **k: noise.clone()
    try:
        with torch.no_grad():
            dtype = data.dtype if data.is_floating_point() else torch.float32
            t_full = t.view(-1, *[1] * (data.ndim - 1)).expand(data.shape).to(dtype).clone()
            return bfn(data, t_full).item()
    finally:
        torch.randn, normal._standard_normal = randn, standard_normal

def save(name, bfn, x, t, out, loss=None):
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in bfn.state_dict().items()},
               OUT / f"{name}.pt")
    torch.save({"x": x, "t": t, "out": out, **(loss or {})}, OUT / f"{name}_io.pt")
    n = sum(p.numel() for p in bfn.parameters())
    print(name, n, "parameters", tuple(out.shape))

g = torch.Generator().manual_seed(0)
torch.manual_seed(0)
# MNIST: UNetModel (improved diffusion), tiny
ad = {"input_adapter": FourierImageInputAdapter(input_channels=1, input_shape=[8, 8], output_height=2, add_pos_feats=False),
      "output_adapter": OutputAdapter(input_height=64, output_channels=1, output_height=1)}
net = UNetModel(ad, image_size=8, in_channels=2, model_channels=32, out_channels=32, num_res_blocks=1,
                attention_resolutions=[2], dropout=0.0, channel_mult=[1, 1], num_heads=4, project_input=True, skip=True)
flow = DiscreteBayesianFlow(n_classes=2, max_sqrt_beta=3, discretize=False)
bfn = BFN(net, flow, DiscreteBayesianFlowLoss(flow, BernoulliFactory())).eval()
randomize(bfn, g)
theta1 = torch.rand(2, 1, 8, 8, generator=g)       # P(class 1), bayesgen's layout (B, C, H, W)
t = torch.tensor([0.3, 0.8])
with torch.no_grad():
    data = (2 * (1 - theta1) - 1).permute(0, 2, 3, 1)  # the official net input: 2 P(class 0) - 1, channels last
    out = bfn.net(data, t[:, None, None, None].expand_as(data))  # (B, HW, 1, 1) logits of class 1
data = torch.randint(0, 2, (2, 8, 8, 1), generator=g)
noise = torch.randn(2, 8, 8, 1, 2, generator=g)
loss = dict(loss_x=data.permute(0, 3, 1, 2).contiguous(), loss_noise=noise.permute(0, 3, 1, 2, 4).contiguous(),
            loss=torch.tensor(reference_loss(bfn, data, t, noise)))
save("bfn_mnist_unet_tiny", bfn, theta1, t, out.reshape(2, 1, 8, 8), loss)

# CIFAR-10: UNetVDM, tiny, discretized (mean, log-std) and continuous heads
for kind, rows in (("discretized", 2), ("continuous", 1)):
    ad = {"input_adapter": FourierImageInputAdapter(input_channels=3, input_shape=[4, 4], output_height=3, add_pos_feats=False, add_mask=False),
          "output_adapter": OutputAdapter(input_height=19, output_channels=3, output_height=rows)}
    net = UNetVDM(ad, embedding_dim=16, n_blocks=2, n_attention_heads=2, dropout_prob=0.0, norm_groups=4,
                  input_channels=3, use_fourier_features=True, attention_everywhere=True, image_size=4)
    flow = CtsBayesianFlow(min_variance=1e-6)
    factory = DiscretizedNormalFactory(num_bins=256, clip=True) if rows == 2 else DeltaFactory()
    bfn = BFN(net, flow, CtsBayesianFlowLoss(flow, factory, noise_pred=True)).eval()
    randomize(bfn, g)
    mu = torch.randn(2, 3, 4, 4, generator=g) * 0.5
    t = torch.tensor([0.1, 0.7])
    with torch.no_grad():
        data = mu.permute(0, 2, 3, 1)
        out = bfn.net(data, t[:, None, None, None].expand_as(data).clone())  # (B, HW, C, rows)
    # bayesgen's layout: (B, rows*C, H, W), parameter-major
    out = out.reshape(2, 4, 4, 3, rows).permute(0, 4, 3, 1, 2).reshape(2, rows * 3, 4, 4)
    from utils_model import quantize
    data = quantize(torch.rand(2, 4, 4, 3, generator=g) * 2 - 1, 256)
    noise = torch.randn(2, 4, 4, 3, generator=g)
    loss = dict(loss_x=data.permute(0, 3, 1, 2).contiguous(), loss_noise=noise.permute(0, 3, 1, 2).contiguous(),
                loss=torch.tensor(reference_loss(bfn, data, t, noise)))
    # float64 as well: sigma_1^(-2t) amplifies float32 rounding of the network output ~1e5-fold
    import copy
    import networks.unet_vdm as unet_vdm
    embedding = unet_vdm.get_timestep_embedding
    unet_vdm.get_timestep_embedding = lambda ts, dim, **k: embedding(ts.double(), dim, dtype=torch.float64)
    loss["loss64"] = torch.tensor(reference_loss(copy.deepcopy(bfn).double(), data.double(), t.double(),
                                                 noise.double()), dtype=torch.float64)
    unet_vdm.get_timestep_embedding = embedding
    save(f"bfn_vdm_unet_tiny_{kind}", bfn, mu, t, out, loss)

# text8: GPT + TextInputAdapter, tiny
ad = {"input_adapter": TextInputAdapter(vocab_size=27, seq_len=16, output_size=32), "output_adapter": None}
net = GPT(ad, vocab_size=27, n_layer=2, n_head=4, n_embd=32, dropout=0.0, skip=True, bias=True)
flow = DiscreteBayesianFlow(n_classes=27, max_sqrt_beta=0.75)
bfn = BFN(net, flow, DiscreteBayesianFlowLoss(flow, CategoricalFactory())).eval()
randomize(bfn, g)
theta = torch.softmax(torch.randn(2, 16, 27, generator=g), -1)
t = torch.tensor([0.2, 0.9])
with torch.no_grad():
    out = bfn.net(theta, t[:, None].expand(2, 16))
data = torch.randint(0, 27, (2, 16), generator=g)
noise = torch.randn(2, 16, 27, generator=g)
loss = dict(loss_x=data, loss_noise=noise, loss=torch.tensor(reference_loss(bfn, data, t, noise)))
save("bfn_transformer_tiny", bfn, theta, t, out, loss)
