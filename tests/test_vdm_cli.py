"""VDM end to end through the command line: `bayesgen train method=vdm` on the 17-level digits
(discretized reconstruction) and on 2-D moons (continuous), then `bayesgen evaluate` with the
infinite- and the k-step bound and `bayesgen sample`."""

import json

import pytest
import torch

from bayesgen.cli import main
from bayesgen.training.build import load_checkpoint

TINY = ["method=vdm", "trainer.max_steps=3", "trainer.val_check_interval=3",
        "trainer.limit_val_batches=1", "checkpoint.every_n_train_steps=3",
        "optim.warmup_steps=1", "ema.warmup_steps=1", "evaluate.max_batches=1", "sample.n=4",
        "sample.frames=3", "method.sample_kwargs.k=4", "trainer.log_every_n_steps=1",
        "net.hidden=32", "net.depth=1", "data.num_workers=0"]


def evaluate(run, out, capsys, *args) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["evaluate", f"ckpt={run}", "max_batches=1", f"out={out}", *args]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


@pytest.mark.parametrize("data, shape", [("digits", (1, 8, 8)), ("moons", (2,))])
def test_train_evaluate_sample(tmp_path, capsys, data, shape):
    run = tmp_path / "run"
    assert main(["train", f"data={data}", *TINY, f"run_dir={run}"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["bpd"] > 0
    # −ELBO = prior + reconstruction + diffusion, each reported in nats/dim
    for args in ([], ["k=7", "samples=2", "repeats=2"]):
        ev, printed = evaluate(run, tmp_path / "eval.json", capsys, *args)
        terms = [ev[f"{t}_nats_per_dim"] for t in ("l_prior", "l_recon", "l_diff")]
        assert sum(terms) == pytest.approx(ev["nats_per_dim"], rel=1e-6)
        assert "l_prior:" in printed and "l_diff:" in printed
    assert ev["eval_kwargs"]["k"] == 7 and ev["eval_kwargs"]["n_measure_samples"] == 2
    assert main(["sample", f"ckpt={run}", "n=3", "k=5", f"out={tmp_path}/s"]) == 0
    x = torch.load(tmp_path / "s/samples.pt")
    assert x.shape == (3, *shape) and torch.isfinite(x).all()
    discretization = load_checkpoint(run)[1].method.discretization
    if data == "digits":  # method.discretization=auto: the digits' 17 grey levels
        assert (discretization.min, discretization.max, discretization.k) == (-1, 1, 17)
        assert (run / "sampling.gif").is_file()
    else:
        assert discretization is None
    assert main(["sample", f"ckpt={run}", "n_steps=5"]) == 2  # BFN's option: a clear error
    assert "does not apply to method vdm" in capsys.readouterr().err
