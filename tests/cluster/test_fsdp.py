"""FSDP2 (`fully_shard`, Lightning's ModelParallelStrategy, `trainer=fsdp2`) on two CPU processes
(gloo): train, checkpoint, resume to the uninterrupted run's exact curve, resume on another
world size (the checkpoint holds the gathered weights), evaluate at the end; the EMA of each
rank's shards (ShardedEMA) equals the EMA of an unsharded DDP run and resumes exactly."""

import subprocess
from pathlib import Path

import pytest
import torch
from cluster_run import BAYESGEN, PYTHON, TINY, job_env

pytestmark = pytest.mark.cluster
TORCHRUN = str(Path(PYTHON).with_name("torchrun"))
SMALL = [*TINY, "trainer.val_check_interval=3", "checkpoint.every_n_train_steps=3"]
FSDP = [*SMALL, "trainer=fsdp2"]


def _train(run: Path, steps: int, processes: int, *extra: str, base=FSDP) -> str:
    head = ([TORCHRUN, f"--nproc-per-node={processes}", "-m", "bayesgen.cli"] if processes > 1
            else [BAYESGEN])
    done = subprocess.run([*head, "train", *base, f"trainer.devices={processes}",
                           f"trainer.max_steps={steps}", f"run_dir={run}", *extra], env=job_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """9 steps on 2 processes at once, the same with DDP (unsharded), and 6 then 3 more (a
    resume)."""
    root = tmp_path_factory.mktemp("fsdp2")
    _train(root / "whole", 9, 2)
    _train(root / "ddp", 9, 2, base=[*SMALL, "trainer=ddp"])
    _train(root / "cut", 6, 2)
    ckpt = torch.load(root / "cut/checkpoints/last.ckpt", weights_only=True)
    return root, ckpt, _train(root / "cut", 9, 2)


def _rows(run: Path) -> list[str]:
    return (run / "logs/metrics.csv").read_text().splitlines()


def test_fsdp2_trains_checkpoints_resumes_exactly_and_on_another_world_size(runs):
    root, ckpt, again = runs
    assert ckpt["global_step"] == 6  # the gathered weights, one file (save_distributed=false)
    assert "resuming from" in again and "(step 6)" in again and "bits/dim" in again
    # the exact curve: each rank resumes its own shard of the epoch and its own generators
    assert _rows(root / "cut") == _rows(root / "whole")
    one = root / "one"
    subprocess.run(["cp", "-r", str(root / "cut"), str(one)], check=True)
    (one / "metrics.json").unlink()
    out = _train(one, 12, 1)  # the 2-process checkpoint on 1 process
    assert "resuming from" in out and "(step 9)" in out and "bits/dim" in out
    assert torch.load(one / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 12
    assert (one / "metrics.json").is_file() and (one / "ema.safetensors").is_file()


def _weights(run: Path) -> tuple[dict, dict, int]:
    """(EMA, raw weights, EMA updates) of a run's last.ckpt."""
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    n = int(ckpt["averaging_state"]["n_averaged"])
    return ckpt["state_dict"], ckpt["current_model_state"], n


def _column(run: Path, name: str) -> list[float]:
    rows = [r.split(",") for r in _rows(run)]
    at = rows[0].index(name)
    return [float(r[at]) for r in rows[1:] if r[at]]


def test_ema_of_the_shards_is_the_unsharded_ema_and_resumes_exactly(runs):
    root = runs[0]
    ema, raw, n = _weights(root / "whole")
    ddp_ema, ddp_raw, ddp_n = _weights(root / "ddp")  # Lightning's WeightAveraging, unsharded
    assert n == ddp_n == 9 and ema.keys() == ddp_ema.keys() == raw.keys()
    for name in ema:  # the same schedule on the same weights, to float32 rounding
        torch.testing.assert_close(raw[name], ddp_raw[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ema[name], ddp_ema[name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # a real average, not a copy
    # validation ran on the EMA weights in both: the same val/bpd
    assert _column(root / "whole", "val/bpd") == pytest.approx(_column(root / "ddp", "val/bpd"),
                                                               rel=1e-4)
    cut_ema, cut_raw, cut_n = _weights(root / "cut")  # 6 steps, then resumed to 9
    assert cut_n == n and all(torch.equal(cut_ema[k], ema[k]) and torch.equal(cut_raw[k], raw[k])
                              for k in ema)  # bit for bit
    # the sharded EMA's checkpoint resumes unsharded (1 process, Lightning's WeightAveraging)
    plain = root / "plain"
    subprocess.run(["cp", "-r", str(root / "whole"), str(plain)], check=True)
    (plain / "metrics.json").unlink()
    out = _train(plain, 12, 1, base=SMALL)
    assert "(step 9)" in out and _weights(plain)[2] == 12  # 9 EMA updates resumed, 3 more
