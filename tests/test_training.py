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
