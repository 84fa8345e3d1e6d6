"""Make bayesgen's if-edm conversion fixture with the Inflationary Flows code (run outside
bayesgen): a tiny IFsPreCond(SongUNet) with random weights, pickled as training_loop.py pickles
its network-snapshot-*.pkl (the modules' source text replaced by a placeholder), plus the
network's D(x, t) on fixed inputs."""
import math, pickle, sys
from pathlib import Path
import numpy as np
import torch
REF = Path(sys.argv[1]); OUT = Path(sys.argv[2]); OUT.mkdir(parents=True, exist_ok=True)
sys.path.insert(0, str(REF))
import types
for missing in ("open3d",):  # imported by dnnlib/util.py for the toy meshes only
    sys.modules.setdefault(missing, types.ModuleType(missing))
import dnnlib
from torch_utils import persistence
from training.networks import IFsPreCond
from training.loss import IFsLoss

g = torch.Generator().manual_seed(0)
res, ch = 4, 3
D = res * res * ch
A = torch.randn(D, D, generator=g, dtype=torch.float64)
W = torch.linalg.qr(A)[0].numpy()                       # orthonormal columns
data_eigs = np.sort(np.exp(np.random.default_rng(0).normal(size=D)))[::-1].copy()
gvec = dnnlib.util.get_g(D, D, "orig", torch.device("cpu")) if hasattr(dnnlib.util, "get_g") else torch.zeros(D)
net = IFsPreCond(img_resolution=res, img_channels=ch, data_eigs=data_eigs, g=gvec, W=W, space="IS",
                 model_type="SongUNet", rho=2.0, gamma0=5e-4, device=torch.device("cpu"),
                 model_channels=8, channel_mult=[1, 1], num_blocks=1, attn_resolutions=[2],
                 dropout=0.0, augment_dim=9, embedding_type="positional", encoder_type="standard",
                 decoder_type="standard").eval().requires_grad_(False)
with torch.no_grad():
    for name, p in net.named_parameters():
        z = torch.round(4 * torch.randn(p.shape, generator=g)).clamp(-12, 12) / 4
        p.copy_((z / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.1 * z + (1 if name.endswith("norm0.weight") or name.endswith("norm1.weight") or name.endswith("norm2.weight") or "aux_norm.weight" in name else 0)).half().float())
x = torch.randn(2, ch, res, res, generator=g)
t = torch.tensor([0.5, 3.0])
with torch.no_grad():
    d, _ = net(x, t)
loss_fn = IFsLoss(g=gvec, W=W, space="IS", rho=2.0, gamma0=5e-4, device=torch.device("cpu"))
for cls in persistence._decorators:  # keep the authors' source text out of the fixture
    cls._orig_module_src = "# source text removed from the bayesgen fixture\n"
data = dict(ema=net, loss_fn=loss_fn, augment_pipe=None, dataset_kwargs=dnnlib.EasyDict(path="cifar10-4x4.zip"))
with open(OUT / "if_songunet_tiny.pkl", "wb") as f:
    pickle.dump(data, f)
torch.save({"x": x, "t": t, "out": d.reshape(x.shape), "g": torch.as_tensor(gvec)}, OUT / "if_songunet_tiny_io.pt")
print(sum(p.numel() for p in net.parameters()), "parameters", (OUT / "if_songunet_tiny.pkl").stat().st_size, "bytes")
