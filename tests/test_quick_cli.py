"""The command line answers help, completion and one-line usage errors without importing torch,
Lightning or Hydra (lazy imports; the figures before/after are in docs/cli.md, "How fast it
answers")."""

import json
import subprocess
import sys

import pytest

from bayesgen.cli import COMMANDS

HEAVY = ("torch", "lightning", "hydra", "numpy")

PROBE = """
import contextlib, io, json, sys
from bayesgen.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    rc = main(json.loads(sys.argv[1]))
print(json.dumps({"rc": rc, "out": out.getvalue(),
                  "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def probe(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(done.stdout.splitlines()[-1])


CASES = [
    (["--help"], 0, "usage: bayesgen COMMAND"),
    (["completion", "bash"], 0, "complete -F _bayesgen bayesgen"),
    *[([name, "--help"], 0, "usage: bayesgen") for name in COMMANDS if name != "train"],
    (["sample"], 2, "missing required option ckpt="),
    (["sample", "ckpt=/does/not/exist", "n=4"], 2, "ckpt=/does/not/exist not found"),
    (["evaluate", "ckpt=/does/not/exist"], 2, "not found"),
    (["evaluate", "bogus=1"], 2, "unknown option bogus="),
    (["sample", "n=zero"], 2, "invalid value 'zero' for n="),
    (["compare"], 2, "give preset=NAME"),
    (["compare", "preset=nope"], 2, "no compare preset"),
    (["nonsense"], 2, "unknown command 'nonsense'"),
]


@pytest.mark.parametrize(("args", "rc", "needle"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_answers_without_torch(args, rc, needle):
    got = probe(args)
    assert got["rc"] == rc and needle in got["out"], got["out"][-500:]
    assert got["heavy"] == [], f"bayesgen {' '.join(args)} imported {got['heavy']}"
    if rc == 2:  # the error is one line
        errors = [line for line in got["out"].splitlines() if line.startswith("bayesgen: error")]
        assert len(errors) == 1


def test_train_help_needs_no_torch():
    """``train --help`` lists the experiments (OmegaConf reads their files), nothing heavier."""
    got = probe(["train", "--help"])
    assert got["rc"] == 0 and "experiment=" in got["out"]
    assert got["heavy"] == []


def test_the_api_still_imports_on_first_use():
    done = subprocess.run([sys.executable, "-c", "import sys, bayesgen; "
                           "assert 'torch' not in sys.modules; bayesgen.BSI; bayesgen.load; "
                           "from bayesgen import BFN, VDM, InflationaryFlow, Discretization; "
                           "print(sorted(set(bayesgen.__all__) - set(dir(bayesgen))))"],
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


TRAIN_ERRORS = [
    (["train", "experiment=nope"], "experiment=nope does not exist"),
    (["train", "trainer.max_step=20"], "did you mean trainer.max_steps?"),
    (["train", "evaluate.split=train"], "invalid evaluate.split=train"),
    (["train", "optim.lr=-1"], "invalid optim.lr=-1"),
]


@pytest.mark.parametrize(("args", "needle"), TRAIN_ERRORS, ids=[" ".join(c[0]) for c in
                                                                TRAIN_ERRORS])
def test_train_config_errors_answer_without_torch(args, needle):
    """Composition and value errors of ``bayesgen train`` come before torch and Lightning are
    imported (Hydra composes the config; checks that need the network import them later)."""
    got = probe(args)
    assert got["rc"] == 2 and needle in got["out"], got["out"][-500:]
    assert not {"torch", "lightning"} & set(got["heavy"]), got["heavy"]
