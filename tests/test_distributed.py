"""The engine's distribution on CPU: a 2-process DDP run (gloo) equals a 1-process run on the
same global batch; evaluation shards examples without padding; bf16-mixed trains in bfloat16
with float32 losses and evaluates in float32."""

import math
import os
import socket
import time

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import TensorDataset

from bayesgen.data import DataModule
from bayesgen.training.build import (
    build_datamodule,
    build_task,
    build_trainer,
    compose_config,
    is_sharded,
)
from bayesgen.training.ema import EMA, ShardedEMA
from bayesgen.training.task import GenerativeTask

STEPS = 3
TRAIN = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))  # one global batch
VAL = torch.arange(7.0)[:, None].repeat(1, 2)  # example i has bits/dim i²: mean 91/7 = 13


class Net(nn.Module):
    """A tiny denoiser with a buffer (DDP broadcasts buffers, as for real networks)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x, t):
        return self.scale * self.layers(torch.cat([x, t[:, None]], 1))


class Deterministic(nn.Module):
    """A method that draws nothing, so that runs can match exactly: the loss reconstructs x at
    t = 1/2; bits/dim is x[0]². Records the examples it sees, and a draw from the global RNG
    that a real method would use for its times and noise."""

    def __init__(self):
        super().__init__()
        self.model, self.data_shape = Net(), (2,)
        self.seen = {"train": [], "eval": [], "draws": []}

    def train_loss(self, x):
        if self.training:
            self.seen["train"].append(x.detach().clone())
            self.seen["draws"].append(torch.rand(()))
        return (self.model(x, x.new_full((len(x),), 0.5)) - x).pow(2).mean(1)

    def elbo(self, x):
        self.seen["eval"].append(x.detach().clone())
        return x[:, 0] ** 2, x[:, 0] ** 2


class Record(Callback):
    """The loss and the raw weights after every optimizer step."""

    def __init__(self):
        self.losses, self.weights = [], None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].detach())
        self.weights = {k: v.clone() for k, v in pl_module.method.model.state_dict().items()}


def _train(devices: int, run_dir) -> dict:
    """STEPS optimizer steps on the 8 training examples (a batch of 8, or 4 on each of 2 ranks),
    then one validation pass over the 7 validation examples (batches of 3)."""
    cfg = compose_config([f"trainer.devices={devices}", "trainer.accelerator=cpu",
                          f"trainer.max_steps={STEPS}", "ema.warmup_steps=0", "ema.decay=0.9"])
    L.seed_everything(0, verbose=False)
    dm = DataModule("moons", batch_size=len(TRAIN) // devices, eval_batch_size=3)
    dm.train = TensorDataset(TRAIN, torch.zeros(len(TRAIN), dtype=torch.long))
    dm.val = dm.test = TensorDataset(VAL, -torch.ones(len(VAL), dtype=torch.long))
    task = GenerativeTask(Deterministic(), lr=1e-2, warmup_steps=0)
    record = Record()
    trainer = build_trainer(cfg, run_dir, callbacks=[record])
    trainer.fit(task, datamodule=dm)
    task.method.seen["eval"].clear()
    val = trainer.validate(task, datamodule=dm, verbose=False)[0]
    return {"losses": torch.stack(record.losses), "weights": record.weights,
            "ema": task.method.model.state_dict(), "seen": task.method.seen,
            "val_bpd": val["val/bpd"]}


def _rank(rank: int, port: int, out) -> None:
    """One of two processes, given the environment that torchrun or srun give each process.
    Forked (no second import of torch) with one thread, as DataLoader workers are."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank), GROUP_RANK="0",
                      LOCAL_WORLD_SIZE="2", NODE_RANK="0")
    torch.set_num_threads(1)
    torch.save(_train(2, out / "ddp"), out / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    ctx = mp.start_processes(_rank, args=(_free_port(), out), nprocs=2, join=False,
                             start_method="fork")
    deadline = time.monotonic() + 180
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process run hung")
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    return ranks, _train(1, out / "single")


def test_each_rank_trains_on_its_half_of_the_global_batch_with_its_own_noise(runs):
    (r0, r1), _ = runs
    assert len(r0["seen"]["train"]) == len(r1["seen"]["train"]) == STEPS
    for a, b in zip(r0["seen"]["train"], r1["seen"]["train"], strict=True):
        assert len(a) == len(b) == len(TRAIN) // 2
        both = torch.cat([a, b])
        assert torch.equal(both[both[:, 0].argsort()], TRAIN[TRAIN[:, 0].argsort()])
    assert not torch.equal(torch.stack(r0["seen"]["draws"]), torch.stack(r1["seen"]["draws"]))


def test_two_processes_match_one_on_the_same_global_batch(runs):
    (r0, r1), single = runs
    # the global loss is the mean of the ranks' losses (equal halves); DDP averages gradients
    torch.testing.assert_close((r0["losses"] + r1["losses"]) / 2, single["losses"])
    assert not torch.allclose(single["losses"][0], single["losses"][-1])  # weights did move
    for key in ("weights", "ema"):
        for name, value in single[key].items():
            assert torch.equal(r0[key][name], r1[key][name]), (key, name)  # ranks agree exactly
            torch.testing.assert_close(r0[key][name], value, rtol=1e-5, atol=1e-6)
    name = "layers.0.weight"
    assert not torch.allclose(single["ema"][name], single["weights"][name])  # EMA ≠ weights


def test_evaluation_counts_every_example_once(runs):
    (r0, r1), single = runs
    seen = [torch.cat(r["seen"]["eval"])[:, 0] for r in (r0, r1)]
    assert [len(s) for s in seen] == [4, 3]  # no padding: 7 examples, 4 + 3
    assert sorted(torch.cat(seen).tolist()) == list(range(7))
    # batch-size-weighted mean over ranks: 91/7, not (0+4+16+36)/4 and (1+9+25)/3 averaged
    for r in (r0, r1, single):
        assert math.isclose(float(r["val_bpd"]), 13.0, rel_tol=1e-6)


def test_bf16_mixed_trains_in_bfloat16_with_float32_loss_and_evaluates_in_float32(tmp_path):
    cfg = compose_config(["data=digits", "net.hidden=32", "net.depth=1", "trainer.accelerator=cpu",
                          "trainer.precision=bf16-mixed", "trainer.max_steps=1",
                          "trainer.limit_val_batches=1", "method.eval_kwargs.n_measure_samples=2"])
    dm = build_datamodule(cfg)
    task = build_task(cfg, dm)
    dtypes = {True: set(), False: set()}  # output dtypes of a linear layer, by task.training
    linear = next(m for m in task.method.model.modules() if isinstance(m, nn.Linear))
    linear.register_forward_hook(lambda m, i, o: dtypes[task.training].add(o.dtype))
    record = Record()
    trainer = build_trainer(cfg, tmp_path, callbacks=[record])
    trainer.fit(task, datamodule=dm)
    bpd = trainer.validate(task, datamodule=dm, verbose=False)[0]["val/bpd"]
    assert dtypes == {True: {torch.bfloat16}, False: {torch.float32}}
    assert record.losses[0].dtype == torch.float32 and torch.isfinite(record.losses[0])
    assert math.isfinite(bpd) and bpd > 0


@pytest.mark.parametrize("override, sharded", [
    ("trainer=ddp", False), ("trainer=fsdp", True), ("trainer.strategy=fsdp", True),
    ("trainer=fsdp2", "fsdp2")])
def test_strategy_configs_and_no_ema_under_fsdp(override, sharded, tmp_path, monkeypatch):
    made = {}
    monkeypatch.setattr(L, "Trainer", lambda **kwargs: made.update(kwargs))  # FSDP needs GPUs
    if sharded == "fsdp2":  # EMA of each rank's shards
        build_trainer(compose_config([override]), tmp_path)
        assert [type(c) for c in made["callbacks"] if isinstance(c, EMA)] == [ShardedEMA]
        assert is_sharded(made["strategy"])
        return
    if sharded:
        with pytest.warns(UserWarning, match="ignored under FSDP"):
            build_trainer(compose_config([override]), tmp_path)
    else:
        build_trainer(compose_config([override]), tmp_path)
        assert type(made["strategy"]).__name__ == "DDPStrategy"
    assert is_sharded(made["strategy"]) == sharded
    assert any(isinstance(c, EMA) for c in made["callbacks"]) != sharded
