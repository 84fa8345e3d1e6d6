"""Full-size check of ``bayesgen convert`` against the reference code, without the published files.

    python benchmarks/check_conversion.py REF_REPO_PATH [REF_REPO_PATH ...]

Each REF_REPO_PATH is a checkout of a reference repository (nnaisense/bayesian-flow-networks,
martenlienen/bsi or dannyfa/Inflationary_Flows; recognised by its files). For every published
configuration of that repository the script builds the reference network *with the reference
code* at full size, gives every parameter random values (the reference initialisations
zero some layers, which would hide mapping errors), saves it as its authors do (the official
BFN ``state_dict()`` with ``torch.save``; BSI's Lightning ``Trainer.save_checkpoint``;
Inflationary Flows' ``pickle.dump`` of the snapshot dict), converts the file with
``bayesgen.conversion``, loads the folder with ``bayesgen.load``, and prints one JSON line with the
maximum relative difference (max |ours − reference| / max |reference|) of the outputs on fixed
random inputs, in float32 on the CPU.

The reference code is imported from REF_REPO_PATH at run time (nothing of it is in bayesgen);
imports it needs only for logging or data (accelerate's logger, wandb, open3d) are stubbed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pickle
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

import bayesgen
from bayesgen.conversion import convert, network_of

BFN_CONFIGS = [("mnist_discrete", "mnist-bfn"),
               ("cifar10_discretized_16bins", "cifar10-bfn-discretized-16"),
               ("cifar10_discretized_256bins", "cifar10-bfn-discretized-256"),
               ("cifar10_continuous_256bins", "cifar10-bfn-continuous-256"),
               ("text8_discrete", "text8-bfn")]


def stub(*names: str) -> None:
    for name in names:
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                module = types.ModuleType(name)
                module.get_logger = logging.getLogger
                sys.modules[name] = module
                parent, _, child = name.rpartition(".")
                if parent:
                    setattr(sys.modules[parent], child, module)


def randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            z = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.copy_(z / math.sqrt(p[0].numel()))
            else:
                p.copy_((1 if name.endswith("weight") else 0) + 0.1 * z)


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def report(repo: str, config: str, experiment: str, ref_params: int, diff: float | None,
           start: float, note: str = "") -> None:
    print(json.dumps({
        "bench": "check_conversion", "repo": repo, "config": config, "experiment": experiment,
        "reference_parameters": ref_params,
        "max_rel_diff": None if diff is None else float(f"{diff:.3g}"),
        "seconds": round(time.time() - start, 1), "note": note, "torch": torch.__version__,
        "machine": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }), flush=True)


def kind_of(path: Path) -> str:
    if (path / "networks" / "unet_vdm.py").is_file():
        return "bfn"
    if (path / "bsi" / "models" / "vdm_unet.py").is_file():
        return "bsi"
    if (path / "training" / "networks.py").is_file() and (path / "torch_utils").is_dir():
        return "if"
    raise SystemExit(f"{path}: not a checkout of bayesian-flow-networks, bsi or "
                     "Inflationary_Flows")


# ---- nnaisense/bayesian-flow-networks ----------------------------------------------------------
def check_bfn(ref: Path, tmp: Path, batch: int) -> None:
    stub("accelerate", "accelerate.logging")
    sys.path.insert(0, str(ref))
    import utils_train
    from omegaconf import OmegaConf

    g = torch.Generator().manual_seed(1)
    for name, experiment in BFN_CONFIGS:
        start = time.time()
        bfn = utils_train.make_bfn(OmegaConf.load(ref / "configs" / f"{name}.yaml").model).eval()
        randomize(bfn, seed=0)
        n_ref = sum(p.numel() for p in bfn.parameters())
        path = tmp / f"{name}_ema.pt"
        torch.save(bfn.state_dict(), path)
        run = bayesgen.load(convert(path, tmp / name, "bfn-official", experiment))
        t = torch.rand(batch, generator=g)
        with torch.no_grad():
            if name.startswith("mnist"):
                theta1 = torch.rand(batch, 1, 28, 28, generator=g)
                data = (2 * (1 - theta1) - 1).permute(0, 2, 3, 1)
                ref_out = bfn.net(data, t[:, None, None, None].expand_as(data)).reshape(
                    batch, 1, 28, 28)
                logits = run.method.model(torch.stack([1 - theta1, theta1], -1), t)
                ours = logits[..., 1] - logits[..., 0]
            elif name.startswith("cifar10"):
                mu = 0.5 * torch.randn(batch, 3, 32, 32, generator=g)
                data = mu.permute(0, 2, 3, 1)
                out = bfn.net(data, t[:, None, None, None].expand_as(data).clone())
                rows = out.shape[-1]
                ref_out = out.reshape(batch, 32, 32, 3, rows).permute(0, 4, 3, 1, 2).reshape(
                    batch, rows * 3, 32, 32)
                ours = network_of(run.method)[1](mu, t)
            else:
                theta = torch.softmax(torch.randn(batch, 256, 27, generator=g), -1)
                ref_out = bfn.net(theta, t[:, None].expand(batch, 256))
                ours = network_of(run.method)[1](theta, t)
        report("nnaisense/bayesian-flow-networks", name, experiment, n_ref, rel(ours, ref_out),
               start)
        del bfn, run


# ---- martenlienen/bsi ---------------------------------------------------------------------------
def check_bsi(ref: Path, tmp: Path, batch: int) -> None:
    stub("wandb")
    sys.path.insert(0, str(ref))
    import bsi.tasks.bsi as bsi_task
    import lightning.pytorch as pl
    import numpy as np
    from bsi.lightning.callbacks import ConfigInCheckpoint
    from omegaconf import OmegaConf

    # numpy >= 2 returns an array from generate_state(1); the repository expects a scalar
    bsi_task.torch_generator_seed = lambda seq: int(seq.spawn(1)[0].generate_state(1)[0])
    conf = ref / "config"
    cases = [("cifar10-vdm", "bsi/unet", (3, 32, 32), "cifar10-vdm"),
             ("imagenet32", "bsi/dit", (3, 32, 32), "imagenet32-dit"),
             ("imagenet64", "bsi/dit", (3, 64, 64), "imagenet64-dit")]
    for name, model_file, shape, experiment in cases:
        start = time.time()
        model = OmegaConf.merge(
            OmegaConf.load(conf / "task" / "model" / f"{model_file}.yaml"),
            {"fourier_features": OmegaConf.load(
                conf / "task" / "model" / "fourier_features" / "fourier.yaml")},
            {"pos_emb": OmegaConf.load(conf / "task" / "model" / "pos_emb" / "nyquist.yaml")}
            if model_file == "bsi/unet" else {},
            OmegaConf.load(conf / "experiment" / f"{name}.yaml").task.model)
        model.pop("defaults", None)
        task = _bsi_task(bsi_task, conf, model, shape, np)
        ema = task.ema_model.ema_model.eval()
        with torch.no_grad():  # the online weights are not converted: zero them
            for p in task.model.parameters():
                p.zero_()
        randomize(ema, seed=0)
        config = OmegaConf.create({"task": {"name": "bsi", "model": model},
                                   "data": {"name": name.split("-")[0]}})
        trainer = pl.Trainer(logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, callbacks=[ConfigInCheckpoint(config)],
                             accelerator="cpu")
        trainer.strategy.connect(task)
        path = tmp / f"bsi-{name}.ckpt"
        trainer.save_checkpoint(path)
        del trainer, task
        run = bayesgen.load(convert(path, tmp / f"bsi-{name}", "bsi-lightning", experiment))
        path.unlink()
        g = torch.Generator().manual_seed(1)
        mu = 0.5 * torch.randn(batch, *shape, generator=g)
        t = torch.rand(batch, generator=g)
        ours = network_of(run.method)[1]
        with torch.no_grad():
            diff = rel(ours(mu, t), ema(mu, t))
            # BSI's Fourier features sin(2π·2⁸·μ + π/2) (the cosine as a shifted sine) round
            # their argument (~1600·|μ|) in float32, ~1e-4 at |μ| ≈ 1: small inputs isolate
            # the mapping
            small = rel(ours(mu / 100, t), ema(mu / 100, t))
        report("martenlienen/bsi", f"{name} (task bsi; {model.get('name', model_file)})",
               experiment, sum(p.numel() for p in ema.parameters()), diff, start,
               f"at |mu| / 100: {small:.2g}")
        del run, ema, ours


def _bsi_task(bsi_task, conf: Path, model, shape: tuple[int, ...], np):
    from omegaconf import OmegaConf

    class Data:
        def data_shape(self):
            return shape

        def short_name(self):
            return "none"  # no FID statistics: the task builds no FID metric

    return bsi_task.BSITraining(
        Data(), bsi=OmegaConf.load(conf / "task" / "bsi" / "config.yaml"), model=model,
        ema=OmegaConf.load(conf / "task" / "ema" / "ema.yaml"), compile=False,
        compile_mode=None, n_elbo_recon_samples=1, n_elbo_measure_samples=1,
        optimizer=OmegaConf.create({"_target_": "torch.optim.AdamW"}),
        seed_sequence=np.random.SeedSequence(0))


# ---- dannyfa/Inflationary_Flows -----------------------------------------------------------------
def check_if(ref: Path, tmp: Path, batch: int) -> None:
    stub("open3d")
    sys.path.insert(0, str(ref))
    import dnnlib
    from training.loss import IFsLoss
    from training.networks import IFsPreCond

    start = time.time()
    g = torch.Generator().manual_seed(0)
    dim = 3 * 32 * 32
    w = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0].numpy()
    eigs = torch.exp(torch.randn(dim, generator=g, dtype=torch.float64)).sort(
        descending=True).values.numpy()
    gvec = dnnlib.util.get_g(dim, dim, "orig", torch.device("cpu"))
    net = IFsPreCond(img_resolution=32, img_channels=3, data_eigs=eigs, g=gvec, W=w, space="IS",
                     model_type="SongUNet", rho=2.0, gamma0=5e-4, device=torch.device("cpu"),
                     embedding_type="positional", encoder_type="standard",
                     decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                     model_channels=128, channel_mult=[2, 2, 2], dropout=0.13,
                     augment_dim=9).eval().requires_grad_(False)
    randomize(net, seed=0)
    loss_fn = IFsLoss(g=gvec, W=w, space="IS", rho=2.0, gamma0=5e-4, device=torch.device("cpu"))
    path = tmp / "network-snapshot-200000.pkl"
    with open(path, "wb") as f:
        pickle.dump(dict(ema=net, loss_fn=loss_fn, augment_pipe=None,
                         dataset_kwargs=dnnlib.EasyDict(path="cifar10-32x32.zip")), f)
    run = bayesgen.load(convert(path, tmp / "if-cifar10", "if-edm", "cifar10-if-prp"))
    x, t = torch.randn(batch, 3, 32, 32, generator=g), torch.tensor([0.5, 3.0, 9.0][:batch])
    with torch.no_grad():
        ref_out = net(x, t)[0].reshape(x.shape)
        ours = run.method.schedule.rotate_to_is(run.method.denoise_es(x.flatten(1), t))
    report("dannyfa/Inflationary_Flows", "cifar10 DDPM++ IFsPreCond (space IS, PR-preserving)",
           "cifar10-if-prp", sum(p.numel() for p in net.parameters()), rel(ours, ref_out), start,
           "output: the preconditioned denoiser D(x, t), not only the network")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repos", nargs="+", type=Path, help="reference repository checkouts")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for repo in args.repos:
            {"bfn": check_bfn, "bsi": check_bsi, "if": check_if}[kind_of(repo)](
                repo.resolve(), Path(tmp), args.batch)


if __name__ == "__main__":
    main()
