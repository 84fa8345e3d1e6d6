"""Bad input through the Python API (issue 8, observation 7): every public entry point of the six
method variants answers NaN/inf data, empty batches, wrong shapes, dtypes and devices, data out of
range and bad sample counts with a one-line ``ValueError`` that names the argument.

Every row of the table is a case. The default run takes every fifth row; ``-m faults`` runs them
all (``make test-faults``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from bayesgen import BFN, BSI, Discretization, InflationaryFlow

SHAPE = (1, 4, 4)  # images for BSI and BFN
K, L = 3, 6  # discrete BFN: 3 classes, sequences of 6
IF_DIM = 3  # Inflationary Flows on 3-D points


class Tiny(nn.Module):
    """A one-layer net ``(x, t) -> out_shape`` with parameters (so that it has a device)."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
        super().__init__()
        self.out_shape = out_shape
        self.lin = nn.Linear(math.prod(in_shape) + 1, math.prod(out_shape))

    def forward(self, x, t, **kwargs):
        h = torch.cat([x.flatten(1), t.reshape(-1, 1).to(x.dtype)], dim=1)
        return self.lin(h).unflatten(1, self.out_shape)


def make(variant: str) -> nn.Module:
    torch.manual_seed(0)
    if variant == "bsi":
        return BSI(Tiny(SHAPE, SHAPE), SHAPE, k=3)
    if variant == "bsi8":
        return BSI(Tiny(SHAPE, SHAPE), SHAPE, k=3, discretization=Discretization.image_8bit())
    if variant == "bfn_continuous":
        return BFN.continuous(Tiny(SHAPE, SHAPE), SHAPE)
    if variant == "bfn_discretized":
        return BFN.discretized(Tiny(SHAPE, (2, 4, 4)), SHAPE, num_bins=16)
    if variant == "bfn_discrete":
        return BFN.discrete(Tiny((L, K), (L, K)), (L,), num_classes=K, beta_1=1.0)
    data = torch.randn(64, IF_DIM, generator=torch.Generator().manual_seed(0))
    return InflationaryFlow.from_data(Tiny((IF_DIM,), (IF_DIM,)), data, t_max=2.0)


def good(variant: str) -> torch.Tensor:
    """A valid batch of 4 examples."""
    g = torch.Generator().manual_seed(1)
    if variant == "bfn_discrete":
        return torch.randint(0, K, (4, L), generator=g)
    if variant == "if":
        return torch.randn(4, IF_DIM, generator=g)
    return torch.rand(4, *SHAPE, generator=g) * 2 - 1


def with_value(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[3] = value
    return x


def soft(x: torch.Tensor) -> torch.Tensor:
    """Class indices → soft targets (float probabilities), for non-finite discrete rows."""
    return nn.functional.one_hot(x, K).float()


# ---- bad data: name → (transform of a good batch, keyword the message must hold) -------------
BAD_DATA: dict[str, tuple[Callable[[torch.Tensor, str], object], str]] = {
    "nan": (lambda x, v: with_value(soft(x) if v == "bfn_discrete" else x, math.nan), "NaN"),
    "inf": (lambda x, v: with_value(soft(x) if v == "bfn_discrete" else x, math.inf), "inf"),
    "empty": (lambda x, v: x[:0], "empty"),
    "shape": (lambda x, v: x[..., :-1], "shape"),
    "extra_dim": (lambda x, v: x[None], "shape"),
    "dtype": (lambda x, v: x.float() if v == "bfn_discrete" else x.to(torch.int64),
              "dtype|floating|class|int"),
    "meta": (lambda x, v: x.to("meta"), "meta"),
    "list": (lambda x, v: x.tolist(), "Tensor"),
    "range_high": (lambda x, v: with_value(x, K) if v == "bfn_discrete" else 3 * x.abs() + 1.5,
                   r"\[|range"),
    "range_low": (lambda x, v: with_value(x, -1) if v == "bfn_discrete" else -3 * x.abs() - 1.5,
                  r"\[|range"),
}
RANGED = ("bsi8", "bfn_continuous", "bfn_discretized", "bfn_discrete")  # BSI, IF: any real data

# entry points that take data: variant → {name: call(method, x)}
IF_FAST = {"solver": "euler", "n_steps": 2}
DATA_CALLS: dict[str, dict[str, Callable]] = {
    "bsi": {"train_loss": lambda m, x: m.train_loss(x),
            "elbo": lambda m, x: m.elbo(x, n_measure_samples=2),
            "finite_elbo": lambda m, x: m.finite_elbo(x, k=3, n_measure_samples=2)},
    "bfn": {"train_loss": lambda m, x: m.train_loss(x),
            "elbo": lambda m, x: m.elbo(x),
            "elbo_n_steps": lambda m, x: m.elbo(x, n_steps=3)},
    "if": {"train_loss": lambda m, x: m.train_loss(x),
           "encode": lambda m, x: m.encode(x, **IF_FAST),
           "elbo": lambda m, x: m.elbo(x, **IF_FAST)},
}


def _family(variant: str) -> str:
    return {"bsi8": "bsi"}.get(variant, variant.split("_")[0])


@dataclass(frozen=True)
class Case:
    variant: str
    what: str
    call: Callable[[nn.Module], object]
    arg: str  # the argument the message must name
    keyword: str  # regex the message must also match

    @property
    def id(self) -> str:
        return f"{self.variant}-{self.what}"


def _data_case(variant: str, entry: str, call: Callable, bad: str) -> Case:
    transform, keyword = BAD_DATA[bad]
    return Case(variant, f"{entry}-{bad}", lambda m: call(m, transform(good(variant), variant)),
                "x", keyword)


def _device_case(variant: str, entry: str, call: Callable) -> Case:
    """The model's parameters on the meta device, the data on the CPU."""
    return Case(variant, f"{entry}-device_mismatch",
                lambda m: call(m.to("meta"), good(variant)), "x", "device|meta")


def _sample_calls(variant: str) -> dict[str, Callable]:
    extra = IF_FAST if variant == "if" else {"n_steps": 2} if variant.startswith("bfn") else {
        "k": 2}
    return {"sample": lambda m, **kw: m.sample(**({**extra, **kw})),
            "sample_history": lambda m, **kw: m.sample_history(**({**extra, **kw}))}


def _cases() -> list[Case]:
    cases = []
    for variant in ("bsi", "bsi8", "bfn_continuous", "bfn_discretized", "bfn_discrete", "if"):
        for entry, call in DATA_CALLS[_family(variant)].items():
            for bad in BAD_DATA:
                if bad.startswith("range") and variant not in RANGED:
                    continue
                cases.append(_data_case(variant, entry, call, bad))
            cases.append(_device_case(variant, entry, call))
        for entry, call in _sample_calls(variant).items():
            for n in (-1, 0, 2.5, True, "4", None):
                cases.append(Case(variant, f"{entry}-n_samples={n!r}",
                                  lambda m, call=call, n=n: call(m, n_samples=n),
                                  "n_samples", "integer|positive"))
            cases.append(Case(variant, f"{entry}-dtype=int64",
                              lambda m, call=call: call(m, n_samples=2, dtype=torch.int64),
                              "dtype", "float"))
            cases.append(Case(variant, f"{entry}-device=meta",
                              lambda m, call=call: call(m, n_samples=2, device="meta"),
                              "device", "model|flow"))
        cases += _argument_cases(variant)
    return cases


def _argument_cases(variant: str) -> list[Case]:
    """Bad values of the other count, step and tolerance arguments."""
    x = good(variant)
    rows: list[tuple[str, Callable, str]] = []
    if variant.startswith("bsi"):
        rows = [("sample-k=0", lambda m: m.sample(2, k=0), "k"),
                ("sample-k=2.5", lambda m: m.sample(2, k=2.5), "k"),
                ("elbo-k=-1", lambda m: m.elbo(x, k=-1, n_measure_samples=2), "k"),
                ("elbo-n_measure_samples=0", lambda m: m.elbo(x, n_measure_samples=0),
                 "n_measure_samples"),
                ("elbo-n_recon_samples=-1", lambda m: m.elbo(x, n_recon_samples=-1),
                 "n_recon_samples"),
                ("elbo-n_measure_samples=2.5", lambda m: m.elbo(x, n_measure_samples=2.5),
                 "n_measure_samples")]
    elif variant.startswith("bfn"):
        rows = [("sample-n_steps=0", lambda m: m.sample(2, n_steps=0), "n_steps"),
                ("sample-n_steps=2.5", lambda m: m.sample(2, n_steps=2.5), "n_steps"),
                ("elbo-n_steps=0", lambda m: m.elbo(x, n_steps=0), "n_steps"),
                ("elbo-n_samples=0", lambda m: m.elbo(x, n_samples=0), "n_samples"),
                ("elbo-n_samples=2.5", lambda m: m.elbo(x, n_samples=2.5), "n_samples"),
                ("continuous_loss-t_shape", lambda m: m.continuous_loss(x, t=torch.rand(3)), "t")]
    else:
        z = torch.randn(4, IF_DIM)
        rows = [("decode-z_nan", lambda m: m.decode(with_value(z, math.nan), **IF_FAST), "z"),
                ("decode-z_shape", lambda m: m.decode(z[:, :2], **IF_FAST), "z"),
                ("decode-z_empty", lambda m: m.decode(z[:0], **IF_FAST), "z"),
                ("decode-z_int", lambda m: m.decode(z.long(), **IF_FAST), "z"),
                ("decode-z_meta", lambda m: m.decode(z.to("meta"), **IF_FAST), "z"),
                ("sample-eps=-1", lambda m: m.sample(2, eps=-1.0, **IF_FAST), "eps"),
                ("elbo-n_probes=0", lambda m: m.elbo(x, n_probes=0, exact_divergence=False,
                                                     **IF_FAST), "n_probes"),
                ("encode-rtol=0", lambda m: m.encode(x, rtol=0.0), "rtol"),
                ("encode-n_steps=0", lambda m: m.encode(x, solver="euler", n_steps=0),
                 "n_steps")]
    return [Case(variant, what, call, arg, ".") for what, call, arg in rows]


CASES = _cases()
FAST = CASES[::5]


def check(case: Case) -> None:
    method = make(case.variant)
    with pytest.raises(ValueError) as info:
        case.call(method)
    msg = str(info.value)
    assert "\n" not in msg.strip(), f"not one line: {msg!r}"
    assert re.search(rf"(?<![\w.]){re.escape(case.arg)}(?![\w])", msg), \
        f"does not name {case.arg!r}: {msg!r}"
    assert re.search(case.keyword, msg), f"does not say {case.keyword!r}: {msg!r}"


@pytest.mark.parametrize("case", FAST, ids=lambda c: c.id)
def test_bad_input(case: Case, one_thread):
    check(case)


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_full_table(case: Case, one_thread):
    check(case)


def test_table_size():
    """The table covers at least the 138 calls of the issue, over all six variants."""
    assert len(CASES) >= 138
    assert {c.variant for c in CASES} == {"bsi", "bsi8", "bfn_continuous", "bfn_discretized",
                                          "bfn_discrete", "if"}


@pytest.mark.parametrize("variant", ["bsi", "bsi8", "bfn_continuous", "bfn_discretized",
                                     "bfn_discrete", "if"])
def test_good_input_still_works(variant: str, one_thread):
    """The checks do not reject what is valid."""
    m = make(variant)
    x = good(variant)
    kw = IF_FAST if variant == "if" else {}
    assert torch.isfinite(m.train_loss(x)).all()
    if variant == "if":
        assert m.encode(x, **kw).shape == (4, IF_DIM)
        assert m.sample(3, **kw).shape == (3, IF_DIM)
    else:
        assert torch.isfinite(m.elbo(x)[1]).all()
        n = {"k": 2} if variant.startswith("bsi") else {"n_steps": 2}
        assert m.sample(3, **n).shape[0] == 3
        assert m.sample(torch.tensor(2), **n).shape[0] == 2  # an integer tensor is an integer
