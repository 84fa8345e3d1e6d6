"""The training engine's pieces: EMA decay schedule, learning-rate schedule, conditioning."""

import math

import pytest
import torch

from bayesgen import BSI
from bayesgen.nets import MLP
from bayesgen.training.ema import EMA
from bayesgen.training.task import GenerativeTask


def test_ema_decay_follows_the_bsi_reference_schedule():
    ema = EMA(decay=0.9999, warmup_steps=1000, power=2 / 3)
    steps = torch.tensor([1, 1000, 1001, 1002, 2000, 10**9])
    decay = ema.decay_at(steps).tolist()
    assert decay[:3] == [0.0, 0.0, 0.0]  # copying during warm-up; 1 − 1^(−2/3) = 0 after it
    assert decay[3] == pytest.approx(1 - 2 ** (-2 / 3))
    assert decay[4] == pytest.approx(1 - 1000 ** (-2 / 3))
    assert decay[5] == pytest.approx(0.9999)


def test_ema_average_is_a_convex_combination():
    ema = EMA(decay=0.5, warmup_steps=0, power=1.0)
    avg, cur = torch.zeros(3), torch.ones(3)
    # num_averaged = 9 → the 10th update: decay = min(0.5, 1 − 10^−1) = 0.5
    torch.testing.assert_close(ema.average(avg, cur, torch.tensor(9)), torch.full((3,), 0.5))


def make_task(**kw) -> GenerativeTask:
    bsi = BSI(MLP((2,), hidden=8, depth=1), data_shape=(2,))
    return GenerativeTask(bsi, lr=1e-3, warmup_steps=10, **kw)


def test_lr_warmup_then_constant():
    task = make_task()
    assert task.lr_factor(0) == pytest.approx(1e-8 / 1e-3)
    assert task.lr_factor(5) == pytest.approx(1e-5 + (1 - 1e-5) * 0.5)
    assert task.lr_factor(10) == 1.0 and task.lr_factor(10**6) == 1.0


def test_lr_cosine_reaches_min_lr():
    task = make_task(lr_schedule="cosine", min_lr=1e-4)

    class FakeTrainer:
        max_steps = 110

    task._trainer = FakeTrainer()
    assert task.lr_factor(10) == pytest.approx(1.0)
    assert task.lr_factor(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert task.lr_factor(110) == pytest.approx(0.1)


def test_label_dropout_and_null_labels():
    task = make_task(num_labels=10, label_dropout=1.0)
    y = torch.tensor([3, -1, 7])
    assert task.model_kwargs(y, train=False)["class_labels"].tolist() == [3, 10, 7]
    assert task.model_kwargs(y, train=True)["class_labels"].tolist() == [10, 10, 10]
    assert make_task().model_kwargs(y, train=True) == {}


def test_bad_schedule_name():
    with pytest.raises(ValueError, match="lr_schedule"):
        make_task(lr_schedule="linear")


@pytest.mark.slow
def test_compiled_train_loss_matches_eager():
    task = make_task(compile=True)
    x = torch.randn(16, 2)
    eager = task.method.train_loss(x, generator=torch.Generator().manual_seed(0))
    compiled = task.train_loss(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(eager, compiled, rtol=1e-4, atol=1e-5)


def test_ema_edm_halflife_with_rampup():
    """EDM's EMA: decay 0.5^(B/h), h = min(half-life, ratio·images seen before the update)."""
    ema = EMA(halflife_images=500_000, rampup_ratio=0.05)
    ema.images_per_step = 512
    decay = ema.decay_at(torch.tensor([1, 2, 11, 10**6])).tolist()
    assert decay[0] == 0.0  # the first update copies
    assert decay[1] == pytest.approx(0.5 ** (512 / (0.05 * 512)))  # h = 0.05·512 images
    assert decay[2] == pytest.approx(0.5 ** (1 / (0.05 * 10)))
    assert decay[3] == pytest.approx(0.5 ** (512 / 500_000))  # 0.99929 once ramped up
    no_ramp = EMA(halflife_images=500_000)
    no_ramp.images_per_step = 512
    assert no_ramp.decay_at(torch.tensor(2)).item() == pytest.approx(0.5 ** (512 / 500_000))
    with pytest.raises(ValueError, match="halflife"):
        EMA(halflife_images=0)


def test_ema_halflife_learns_images_per_step_from_the_trainer(tmp_path):
    import lightning as L

    from bayesgen.data import DataModule

    dm = DataModule("circles", batch_size=32, n_train=256, n_val=32, n_test=32)
    task = make_task()
    ema = EMA(halflife_images=1000, rampup_ratio=0.05)
    trainer = L.Trainer(max_steps=3, accumulate_grad_batches=2, callbacks=[ema], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=dm)
    assert ema.images_per_step == 64  # batch 32 x 2 accumulated x 1 process


def test_official_weight_decay_groups():
    """nanoGPT's groups (BFN's text8 run): only Linear/conv weights decay."""
    from bayesgen.nets import Transformer
    from bayesgen.training.task import weight_decay_groups

    net = Transformer(vocab_size=5, seq_len=8, n_layer=2, n_head=2, n_embd=16)
    decay, no_decay = weight_decay_groups(net, only_layer_weights=True)
    linear = {id(m.weight) for m in net.modules() if isinstance(m, torch.nn.Linear)}
    assert {id(p) for p in decay} == linear
    assert len(decay) + len(no_decay) == len(list(net.parameters()))
    assert all(p.ndim == 1 for p in no_decay)  # biases and LayerNorm parameters
    everything, none = weight_decay_groups(net, only_layer_weights=False)
    assert len(everything) == len(list(net.parameters())) and none == []


def test_augmented_training_step_feeds_labels_to_the_net():
    from bayesgen.training.augment import AugmentPipe

    seen = {}

    class Method(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def train_loss(self, x, augment_labels=None):
            seen["labels"] = augment_labels
            return (x.flatten(1) * self.w).sum(1)

    task = GenerativeTask(Method(), augment=AugmentPipe(p=1.0, xflip=1e8, scale=1))
    task.log = lambda *a, **k: None
    task.training_step((torch.randn(4, 3, 8, 8), torch.full((4,), -1)), 0)
    assert seen["labels"].shape == (4, 2)


def test_conditional_bpd_adds_the_label_bound():
    """A class-conditional model with a uniform label prior: bits/dim of p(x) ≤ that of
    p(x|y) + log2 K / D, reported beside the conditional number and used in the summary."""
    import math
    from types import SimpleNamespace

    from bayesgen.metrics.summary import summary_lines
    from bayesgen.training.outputs import evaluate_bpd

    class Const(torch.nn.Module):
        data_shape = (1, 8, 8)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def elbo(self, x, class_labels=None):
            bpd = 1.5 + 0.01 * torch.arange(len(x), dtype=torch.float64)
            return -bpd, bpd

    def task(k):
        return SimpleNamespace(method=Const(), num_labels=k,
                               model_kwargs=lambda y, train: {"class_labels": y} if k else {})

    loader = [(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))]
    plain = evaluate_bpd(task(0), loader, progress=False)
    cond = evaluate_bpd(task(10), loader, progress=False)
    assert "bpd_marginal" not in plain and plain["bpd"] == pytest.approx(1.515)
    assert cond["bpd"] == plain["bpd"] and cond["conditional"] is True
    assert cond["bpd_marginal"] == pytest.approx(1.515 + math.log2(10) / 64)
    lines = summary_lines(cond, None, {"per-pixel histogram": {"bpd": 2.43, "bpd_se": 0.01}})
    assert f"{1.515 + math.log2(10) / 64:.3f} ± " in lines[2] and "p(x|y)'s 1.515" in lines[1]


def test_paired_margin_to_baseline_by_hand():
    """The demo's margin to the best baseline is a paired difference over the same test
    images: image difficulty shared by model and baseline cancels (hand-computed here)."""
    from bayesgen.metrics.summary import paired_margin, summary_lines

    model = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    base = torch.tensor([1.2, 2.1, 3.3, 4.2], dtype=torch.float64)  # diffs .2 .1 .3 .2
    gap, se = paired_margin(model, base)
    assert gap == pytest.approx(0.2)
    assert se == pytest.approx(math.sqrt(((0.0 + 0.01 + 0.01 + 0.0) / 3) / 4))
    assert paired_margin(model, base, offset=0.05)[0] == pytest.approx(0.15)
    assert paired_margin(model, base[:3]) is None       # not the same examples
    metrics = {"bpd": 2.5, "bpd_se": (model.std() / 2).item()}
    rows = {"per-pixel histogram": {"bpd": 2.7, "bpd_se": 0.3, "per_example": base},
            "Gaussian": {"bpd": 3.5, "bpd_se": 0.1}}
    paired = summary_lines(metrics, None, rows, model)[-1]
    assert "0.200 ± 0.041" in paired and "paired" in paired and "per-pixel histogram" in paired
    unpaired = summary_lines(metrics, None, rows)[-1]   # 0.2 / 0.65 SE: not clear
    assert unpaired.startswith("  -> NOT clearly below") and "unpaired" in unpaired


def test_no_versioned_checkpoints_when_validation_checkpoint_and_end_coincide(tmp_path):
    """Validation, the periodic checkpoint and the end of training at one step once left a
    ``last-v1.ckpt`` beside ``last.ckpt`` (Lightning's version counter)."""
    from bayesgen.training.build import compose_config
    from bayesgen.training.checkpoint import read_checkpoint
    from bayesgen.training.fit import run_training

    run = tmp_path / "run"
    run_training(compose_config([
        "data=digits", "net.hidden=16", "net.depth=1", "trainer.max_steps=5",
        "trainer.val_check_interval=5", "checkpoint.every_n_train_steps=5",
        "trainer.limit_val_batches=1", "optim.warmup_steps=1", "ema.warmup_steps=1",
        "sample.n=4", "sample.animation=none", "method.sample_kwargs.k=2",
        "method.eval_kwargs.n_measure_samples=1", "evaluate.max_batches=1", "logger=csv",
        f"run_dir={run}"]))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert not [n for n in names if "-v" in n], names
    assert {"last.ckpt", "step0000005.ckpt"} <= set(names)
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 5


def test_sharded_ema_matches_weight_averaging_and_their_checkpoints_interchange(tmp_path):
    """ShardedEMA (trainer=fsdp2's EMA, each rank on its shards) on unsharded weights: the same
    EMA as Lightning's WeightAveraging, bit for bit, in the same checkpoint layout, and each
    resumes the other's checkpoint. tests/cluster/test_fsdp.py runs it sharded on 2 processes."""
    import lightning as L

    from bayesgen.data import DataModule
    from bayesgen.training.ema import ShardedEMA

    def fit(ema, steps, ckpt=None):
        L.seed_everything(0, verbose=False)
        dm = DataModule("circles", batch_size=16, n_train=128, n_val=16, n_test=16)
        task = make_task()
        trainer = L.Trainer(max_steps=steps, callbacks=[ema], logger=False, val_check_interval=2,
                            enable_checkpointing=False, enable_progress_bar=False,
                            limit_val_batches=1, default_root_dir=tmp_path,
                            enable_model_summary=False)
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt)
        path = tmp_path / f"{type(ema).__name__}-{steps}-{ckpt is not None}.ckpt"
        trainer.save_checkpoint(path)
        return torch.load(path, weights_only=True), path

    def same(a, b):
        assert a["averaging_state"]["n_averaged"] == b["averaging_state"]["n_averaged"]
        for key in ("state_dict", "current_model_state"):
            assert a[key].keys() == b[key].keys()
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key

    args = dict(decay=0.999, warmup_steps=1, power=2 / 3)
    plain, _ = fit(EMA(**args), 6)
    sharded, _ = fit(ShardedEMA(**args), 6)
    same(plain, sharded)
    assert int(plain["averaging_state"]["n_averaged"]) == 6
    assert any(not torch.equal(plain["state_dict"][k], plain["current_model_state"][k])
               for k in plain["state_dict"])  # a real average
    _, half_plain = fit(EMA(**args), 3)
    _, half_sharded = fit(ShardedEMA(**args), 3)
    same(torch.load(half_plain, weights_only=True), torch.load(half_sharded, weights_only=True))
    # each resumes the other's checkpoint as its own (a plain Trainer's resume is not exact:
    # bayesgen's ExactResume and sampler are not here, so the four resumes compare to each other)
    first, *others = [fit(cls(**args), 6, str(ckpt))[0] for cls in (EMA, ShardedEMA)
                      for ckpt in (half_plain, half_sharded)]
    assert int(first["averaging_state"]["n_averaged"]) == 6  # 3 resumed + 3
    for other in others:
        same(first, other)
