"""Make bayesgen's bsi-lightning conversion fixture with the BSI code (run outside bayesgen):
a tiny BSITraining (DenoisingVDMUNet) with random online and EMA weights, saved by Lightning's
Trainer.save_checkpoint with the repository's ConfigInCheckpoint callback, plus the EMA
network's output on fixed inputs."""
import math, sys, types
from pathlib import Path
import numpy as np
import torch
REF = Path(sys.argv[1]); OUT = Path(sys.argv[2]); OUT.mkdir(parents=True, exist_ok=True)
sys.path.insert(0, str(REF))
for missing in ("wandb",):  # imported for logging only
    sys.modules.setdefault(missing, types.ModuleType(missing))
import lightning.pytorch as pl
from omegaconf import OmegaConf
import bsi.tasks.bsi as bsi_task
from bsi.tasks.bsi import BSITraining
# numpy >= 2 returns an array from generate_state(1); the repository's helper expects a scalar
bsi_task.torch_generator_seed = lambda seq: int(seq.spawn(1)[0].generate_state(1, np.uint64)[0])
from bsi.lightning.callbacks import ConfigInCheckpoint

class FakeData:
    def data_shape(self):
        return (3, 4, 4)

    def short_name(self):  # no FID statistics exist for it: the task builds no FID metric
        return "tiny"

DIT = len(sys.argv) > 3 and sys.argv[3] == "dit"
model_cfg = OmegaConf.create({
    "_target_": "bsi.models.dit.DenoisingDiT", "name": "dit", "patch_size": 2, "dim": 32, "depth": 2,
    "heads": 4, "dropout": 0.05,
    "fourier_features": {"_target_": "bsi.nn.FourierFeatures", "name": "fourier", "n_min": 6, "n_max": 7}}) if DIT else OmegaConf.create({
    "_target_": "bsi.models.vdm_unet.DenoisingVDMUNet", "name": "unet", "actfn": "silu",
    "dim": 32, "levels": 1, "dropout": 0.1, "pos_emb_mult": 4, "downsampling_attention": False,
    "n_attention_heads": 2, "padding_mode": "zeros",
    "pos_emb": {"_target_": "bsi.models.pos_emb.NyquistPositionalEmbedding.from_config", "name": "nyquist", "size": 8, "expected_rate": 100},
    "fourier_features": {"_target_": "bsi.nn.FourierFeatures", "name": "fourier", "n_min": 6, "n_max": 7}})
bsi_cfg = OmegaConf.create({"_target_": "bsi.bsi.BSI", "lambda_0": 1e-2, "alpha_M": 1e6, "alpha_R": 2e6, "k": 50,
                            "preconditioning": "edm", "low_discrepancy_sampling": True})
ema_cfg = OmegaConf.create({"name": "ema", "beta": 0.9999, "power": 2 / 3, "inv_gamma": 1.0, "update_after_step": 1000,
                            "update_every": 1, "update_model_with_ema_every": None})
opt_cfg = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 2e-4, "betas": [0.9, 0.99], "weight_decay": 1e-2})
task = BSITraining(FakeData(), bsi=bsi_cfg, model=model_cfg, ema=ema_cfg, compile=False, compile_mode=None,
                   n_elbo_recon_samples=1, n_elbo_measure_samples=1, optimizer=opt_cfg,
                   seed_sequence=np.random.SeedSequence(0), lr_scheduler=None)
g = torch.Generator().manual_seed(0)
def randomize(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            z = torch.round(4 * torch.randn(p.shape, generator=g)).clamp(-12, 12) / 4
            p.copy_((z / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.1 * z + (1 if name.endswith("0.weight") and p.ndim == 1 else 0)).half().float())
with torch.no_grad():  # online weights zero (they compress away); the EMA ones random
    for p in task.model.parameters():
        p.zero_()
randomize(task.ema_model.ema_model)
config = OmegaConf.create({"task": {"name": "bsi", "model": model_cfg, "bsi": bsi_cfg}, "data": {"name": "imagenet32" if DIT else "cifar10"}})
trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     callbacks=[ConfigInCheckpoint(config)], accelerator="cpu")
trainer.strategy.connect(task)
trainer.save_checkpoint(OUT / f"bsi_{'dit' if DIT else 'vdm_unet'}_tiny.ckpt")
ema = task.ema_model.ema_model.eval()
mu = torch.randn(2, 3, 4, 4, generator=g) * 0.5
t = torch.tensor([0.25, 0.75])
with torch.no_grad():
    out = ema(mu, t)
torch.save({"x": mu, "t": t, "out": out}, OUT / f"bsi_{'dit' if DIT else 'vdm_unet'}_tiny_io.pt")
print(sum(p.numel() for p in ema.parameters()), "parameters", (OUT / f"bsi_{'dit' if DIT else 'vdm_unet'}_tiny.ckpt").stat().st_size)
