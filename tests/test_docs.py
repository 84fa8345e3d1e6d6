"""Every command line of README.md and of the guides in docs/ runs here, so that the
documentation cannot drift from the code.

A command line is a line of a ```sh block, or a ``$ `` line of a ```text block (continuation
lines joined, trailing comments dropped). Each one is either in ``RUN`` (how it runs here: shrunk
to a tiny budget by overrides that replace the documented values or are appended, and, where
the page shows its output, compared with it) or in ``NOT_RUN`` with the reason. A documented
line in neither table fails `test_every_documented_command_is_covered`; an entry whose line
left every page fails it too. Commands run in-process through ``bayesgen.cli.main`` in a
scratch folder that holds the runs and files the pages' paths name (made by the ``workspace``
fixture). The site itself (links, anchors, API reference) is built by ``mkdocs build
--strict`` in ``make test``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bayesgen.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

# a training run shrunk to seconds: any of these replaces the README's value or is appended
MLP = ("net.hidden=32", "net.depth=1")
TINY = ("trainer.max_steps=4", "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1", "checkpoint.every_n_train_steps=2",
        "optim.warmup_steps=1", "ema.warmup_steps=1", "sample.n=4", "sample.frames=3",
        "evaluate.max_batches=1", "log_samples.n=0", "data.num_workers=0")
TINY_BSI = (*TINY, *MLP, "method.sample_kwargs.k=4", "method.eval_kwargs.n_measure_samples=2")
BSI_RUN = "runs/digits-bsi/2026-11-24_05-48-07"  # the demo's run in the README's examples
VDM_RUN = "runs/digits-vdm/2026-12-02_02-52-47"
MNIST_CKPT = "runs/bench-mnist-sbs/small/checkpoints/step0000300.ckpt"


@dataclass(frozen=True)
class Run:
    """How a README line runs here."""

    shrink: tuple[str, ...] = ()     # key=value: replaces the README's value, or is appended
    replace: tuple[tuple[str, str], ...] = ()  # literal text replacements (placeholders)
    as_info: bool = False            # `train` checked with `bayesgen info` (same overrides)
    rc: int = 0                      # expected exit status
    output: str | None = None        # "exact" or "form" (numbers masked): the README's output
    slow: bool = False
    needs: tuple[str, ...] = ()      # what the workspace must hold: "shared", "digits-bsi", ...
    reason: str = ""                 # why it is shrunk or checked only in part


@dataclass
class Command:
    line: str
    output: list[str] = field(default_factory=list)  # what the page shows after a `$ ` line
    page: str = "README.md"


# ---- the README's command lines --------------------------------------------------------------
def readme_commands(text: str, page: str = "README.md") -> list[Command]:
    """The command lines of ```sh blocks and the ``$ `` lines of ```text blocks, in order."""
    commands: list[Command] = []
    fence, pending, current = None, "", None
    for raw in text.splitlines():
        if raw.startswith("```"):
            fence, current = (raw[3:].strip() or "plain") if fence is None else None, None
            continue
        if fence not in ("sh", "text"):
            continue
        line = raw.rstrip()
        if pending:
            line, pending = pending + " " + line.strip(), ""
        elif fence == "text":
            if not line.startswith("$ "):
                if current is not None:
                    current.output.append(line)
                continue
            line = line[2:]
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line:
            current = Command(line, page=page)
            commands.append(current)
    return commands


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
ALL_COMMANDS = [c for p in PAGES for c in readme_commands(p.read_text(), str(p.relative_to(ROOT)))]


def _once(commands: list[Command]) -> list[Command]:
    """A line shown with the same output on several pages runs once."""
    seen, out = set(), []
    for c in commands:
        key = (c.line, tuple(c.output))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


COMMANDS = _once(ALL_COMMANDS)

RUN: dict[str, Run] = {
    # ---- Quick start, Train
    "bayesgen train experiment=digits-bsi": Run(TINY_BSI, needs=("digits-bsi",)),
    "bayesgen train experiment=digits-bsi trainer.max_steps=20000 optim.lr=3e-4 seed=1":
        Run(TINY_BSI, slow=True),
    "bayesgen train data=moons method=bsi net=mlp": Run(TINY_BSI),
    "bayesgen train experiment=digits-bsi evaluate.quality_every=2000 evaluate.quality_n=128":
        Run((*TINY_BSI, "evaluate.quality_every=2", "evaluate.quality_n=8",
             "evaluate.repeats=1"), reason="quality scored at step 2 of 4, 8 samples"),
    "bayesgen train experiment=mnist-bfn trainer.precision=bf16-mixed compile=true":
        Run((*TINY, "net.net.model_channels=32", "net.net.channel_mult=[1]",
             "net.net.num_res_blocks=1", "data.batch_size=4", "data.eval_batch_size=100",
             "trainer.max_steps=2",
             "method.sample_kwargs.n_steps=3"),
            slow=True, needs=("shared",),
            reason="MNIST from ../shared/data; torch.compile on a CPU takes minutes"),
    "bayesgen train from_ckpt=runs/digits-bsi/2026-11-24_05-00-00 trainer.max_steps=8000":
        Run(("trainer.max_steps=6",), needs=("resumable",)),
    # ---- one-line errors (the README shows them)
    "bayesgen train trainer.max_step=20": Run(rc=2, output="exact"),
    "bayesgen sample ckpt=runs/digits-bsi/x colour=red": Run(rc=2, output="exact"),
    "bayesgen sample ckpt=runs/digits-bsi/x sed=1": Run(rc=2, output="exact"),
    "bayesgen train data=mnist data.root=/tmp/empty": Run(
        rc=2, output="exact", replace=(("/tmp/empty", "{tmp}/empty"),), needs=("offline",),
        reason="no network: the download fails as it does on this project's machines"),
    "bayesgen train --cfg job experiment=digits-bsi -p optim": Run(output="exact"),
    "bayesgen train --cfg hydra | sed -n '/^  run:/,/^  sweep:/p'": Run(output="exact"),
    "bayesgen train experiment=digits-bsi method=bfn_continuous": Run(rc=2, output="exact"),
    "bayesgen train method=bfn_discretized net=mlp": Run(rc=2, output="exact"),
    "bayesgen train evaluate.split=train": Run(rc=2, output="exact"),
    # ---- scale-out: composed and validated here, trained on GPUs elsewhere
    "bayesgen train experiment=cifar10-vdm trainer.devices=4": Run(
        as_info=True, reason="4 GPUs and CIFAR-10: composed and validated by bayesgen info"),
    "bayesgen train experiment=cifar10-vdm trainer=ddp trainer.devices=4 trainer.num_nodes=2":
        Run(as_info=True, reason="2 nodes of 4 GPUs: composed and validated by bayesgen info"),
    "bayesgen train experiment=imagenet32-dit trainer=fsdp trainer.devices=8": Run(
        as_info=True, slow=True,
        reason="8 GPUs and ImageNet: composed and validated by bayesgen info"),
    "bayesgen train experiment=imagenet32-dit trainer.precision=bf16-mixed": Run(
        as_info=True, slow=True,
        reason="a GPU and ImageNet: composed and validated by bayesgen info"),
    "torchrun --standalone --nproc-per-node 2 -m bayesgen.cli train experiment=digits-bsi "
    "trainer.devices=2 "
    "run_dir=runs/x": Run((*TINY_BSI, "trainer.accelerator=cpu"), slow=True,
                          reason="two processes on the CPU (gloo)"),
    # ---- Evaluate, Sample (on a tiny run at the README's path)
    f"bayesgen evaluate ckpt={BSI_RUN}": Run(output="form", needs=("digits-bsi",)),
    "bayesgen evaluate ckpt=runs/digits-bsi/2026-11-24_05-48-07 k=100 samples=20": Run(
        ("k=10", "samples=2"), output="form", needs=("digits-bsi",)),
    f"bayesgen evaluate ckpt={MNIST_CKPT} n_steps=784 receiver=per_coordinate batch_size=100 "
    "max_batches=5": Run(("max_batches=1",), output="form", slow=True,
                         needs=("shared", "bench-mnist")),
    "bayesgen evaluate ckpt=… n_steps=784 receiver=joint batch_size=100 max_batches=5": Run(
        ("max_batches=1",), replace=(("ckpt=…", f"ckpt={MNIST_CKPT}"),), output="form",
        slow=True, needs=("shared", "bench-mnist")),
    f"bayesgen sample ckpt={BSI_RUN} n=16 k=50": Run(output="form", needs=("digits-bsi",)),
    f"bayesgen sample ckpt={BSI_RUN} n=16 k=20 sampler=ode2": Run(output="form",
                                                                   needs=("digits-bsi",)),
    f"bayesgen sample ckpt={BSI_RUN} inpaint=digit.png mask=mask.png n=16": Run(
        shrink=("k=4",), needs=("digits-bsi", "inpaint-pictures"),
        reason="4 sampler steps; the README's run has 100"),
    # ---- VDM: the train line makes the run the next three lines read
    "bayesgen train data=digits method=vdm method.snr_max=1096.6 net.hidden=1024 net.depth=2 "
    "'net.fourier_exponents=[]' optim.lr=1e-3 optim.warmup_steps=200 optim.lr_schedule=cosine "
    "ema.decay=0.999 ema.warmup_steps=200 trainer.max_steps=2000": Run(
        (*TINY, *MLP, "method.sample_kwargs.k=4", f"run_dir={VDM_RUN}"), needs=("digits-vdm",)),
    f"bayesgen evaluate ckpt={VDM_RUN}": Run(output="form", needs=("digits-vdm",)),
    f"bayesgen evaluate ckpt={VDM_RUN} k=50": Run(output="form", needs=("digits-vdm",)),
    f"bayesgen sample ckpt={VDM_RUN} n=16 k=50": Run(output="form", needs=("digits-vdm",)),
    # ---- compare (several trainings each)
    "bayesgen compare preset=digits": Run(("steps=2", "samples=8", *MLP), slow=True),
    "bayesgen compare preset=mnist": Run(("steps=2", "samples=8"), slow=True,
                                         needs=("shared",)),
    "bayesgen compare preset=mnist steps=2000 name=mnist-2k": Run(
        ("steps=2", "samples=8"), slow=True, needs=("shared",)),
    "bayesgen compare preset=digits methods=bsi,bfn seconds=120 name=digits-2min "
    "trainer.val_check_interval=250":
        Run(("seconds=3", "samples=8", "trainer.val_check_interval=2"), slow=True),
    "bayesgen compare config=my-comparison.yaml": Run(("steps=2", "samples=8"), slow=True,
                                                      needs=("my-comparison",)),
    # ---- data preparation
    "bayesgen prepare images source=../shared/data/cifar10-jpeg/test.tar "
    "dest=data/cifar10-test.zip": Run(("max_images=20",), needs=("shared",)),
    "bayesgen prepare images source=downloads/afhqv2 dest=data/afhqv2-32x32.zip resolution=32":
        Run(needs=("afhqv2",), reason="a folder of 6 random 64x64 PNGs in 2 class folders"),
    "bayesgen train data=image_zip data.root=data/afhqv2-32x32.zip evaluate.split=val "
    "method=bsi net=mlp": Run((*TINY_BSI, "data.batch_size=4", "data.eval_batch_size=4"),
                              needs=("afhqv2-zip",), reason="the 6 pictures of `afhqv2`"),
    "bayesgen train data=text data.root=../shared/data/text/tinyshakespeare.txt "
    "method=bfn_discrete net=transformer net.n_layer=4 net.n_head=4 net.n_embd=256": Run(
        (*TINY, "net.n_layer=1", "net.n_head=2", "net.n_embd=16", "data.seq_len=16",
         "data.batch_size=4", "data.eval_batch_size=64", "method.sample_kwargs.n_steps=3"),
        needs=("shared",), reason="a one-layer transformer on windows of 16 characters"),
    "bayesgen prepare imagenet source=data/imagenet32/data dest=data/imagenet32/imagenet32.h5 "
    "resolution=32": Run(needs=("imagenet-npz",),
                         reason="3 tiny npz batches in the official format"),
    "bayesgen fid gen ckpt=runs/cifar10-if-prp/2026-11-30_08-00-00 dest=fid-tmp n=50000 "
    "batch_size=500": Run(("n=4", "batch_size=4"), slow=True, needs=("if-image",),
                          reason="a 2-step cifar10-if-prp run on 8x8 images"),
}

NOT_RUN: dict[str, str] = {
    # docs/checkpoints.md: the authors' published and trained files cannot be downloaded here;
    # tests/test_convert.py converts, loads, evaluates and samples fixtures of every format
    **{c.line: "needs the authors' checkpoint files (no network here); tests/test_convert.py "
               "converts fixtures of each format" for c in ALL_COMMANDS
       if c.page == "docs/checkpoints.md" and c.line.split()[0] in ("bayesgen", "git")},
    "make demo": "creates .venv and installs torch (minutes); its training is "
                 "`bayesgen train experiment=digits-bsi`, run above",
    "make test": "runs ruff and this very test suite",
    "bayesgen train -m hydra/launcher=slurm hydra.launcher.partition=gpu trainer.devices=4 "
    "trainer.num_nodes=2 hydra.launcher.timeout_min=1440 experiment=imagenet32-dit":
        "needs Slurm (srun); tests/test_slurm.py submits through a stand-in",
    "bayesgen prepare images source=downloads/cifar-10-python.tar.gz dest=data/cifar10-32x32.zip":
        "needs the official CIFAR-10 tarball (163 MB download; its md5 is checked); "
        "tests/test_data.py converts a stand-in tarball",
    "bayesgen fid ref data=data/cifar10-32x32.zip dest=fid-refs/cifar10-32x32.npz "
    "weights=weights-inception-2015-12-05-6726825d.pth":
        "needs the Inception weights file, which cannot be downloaded here",
    "bayesgen fid calc images=fid-tmp ref=fid-refs/cifar10-32x32.npz "
    "weights=weights-inception-2015-12-05-6726825d.pth num=50000":
        "needs the Inception weights file, which cannot be downloaded here",
}


def test_every_documented_command_is_covered():
    missing = [f"{c.page}: {c.line}" for c in COMMANDS if c.line not in RUN
               and c.line not in NOT_RUN]
    assert not missing, ("documented command lines neither run nor listed in tests/test_docs.py "
                         f"(add each to RUN or NOT_RUN): {missing}")
    lines = {c.line for c in COMMANDS}
    stale = [line for line in (*RUN, *NOT_RUN) if line not in lines]
    assert not stale, f"entries whose line is on no page any more: {stale}"
    assert not set(RUN) & set(NOT_RUN)
    assert {c.page for c in ALL_COMMANDS} >= {"README.md", "docs/index.md", "docs/training.md"}


def test_readme_links_exist_and_it_stays_a_front_page():
    """Every relative link of the README names a file of the repository (the site's links
    are checked by mkdocs build --strict), and the README stays short."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)", text)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert any(t.startswith("docs/") for t in local), "the README links no guide"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    assert len(text.splitlines()) <= 250


def test_the_readme_python_example_runs():
    """The README's plain Python blocks (not ``>>>`` sessions) run as they are."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    plain = [b for b in blocks if not b.lstrip().startswith(">>>")]
    assert plain
    for block in plain:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["fast"].shape == namespace["samples"].shape == (16, 3, 32, 32)


# ---- the scratch folder the README's paths point into --------------------------------------
def _run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # Hydra's own flags exit
        return int(e.code or 0)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder holding what the README's commands read, each made on first use."""
    return Workspace(tmp_path_factory.mktemp("readme"))


class Workspace:
    def __init__(self, root: Path):
        self.root, self.made = root / "work", set()
        self.root.mkdir()

    def need(self, what: str, monkeypatch) -> None:
        if what == "shared":
            if not SHARED.is_dir():
                pytest.skip(f"{SHARED} is not here")
            link = self.root.parent / "shared"
            if not link.exists():
                link.symlink_to(SHARED.parent)
            return
        if what == "offline":
            from bayesgen.data import info as info_module

            def no_network(*args, **kwargs):
                raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

            monkeypatch.setattr(info_module, "download_url", no_network)
            return
        if what in self.made:
            return
        make = getattr(self, "_" + what.replace("-", "_"))
        make()
        self.made.add(what)

    def _train(self, *args: str) -> None:
        assert _run_main(["train", *args]) == 0, args

    def _digits_bsi(self) -> None:
        self._train("experiment=digits-bsi", *TINY_BSI, f"run_dir={BSI_RUN}")

    def _inpaint_pictures(self) -> None:
        grey = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
        Image.fromarray(grey, mode="L").save(self.root / "digit.png")
        white = np.zeros((8, 8), np.uint8)
        white[:4] = 255
        Image.fromarray(white, mode="L").save(self.root / "mask.png")

    def _resumable(self) -> None:
        self.need("digits-bsi", None)
        shutil.copytree(self.root / BSI_RUN, self.root / "runs/digits-bsi/2026-11-24_05-00-00")

    def _digits_vdm(self) -> None:  # the README's own VDM line makes it (see RUN)
        line = next(c.line for c in COMMANDS if c.line.startswith("bayesgen train data=digits "
                                                                   "method=vdm"))
        assert _run_main(_argv(line, RUN[line])[1:]) == 0

    def _bench_mnist(self) -> None:
        run = self.root / "runs/bench-mnist-sbs/small"
        self._train("data=binarized_mnist", "method=bfn_discrete", "net=binary_mlp",
                    *TINY, "net.net.hidden=16",
                    "net.net.depth=1", "method.sample_kwargs.n_steps=3", f"run_dir={run}")
        shutil.copy(run / "checkpoints/last.ckpt", self.root / MNIST_CKPT)

    def _my_comparison(self) -> None:
        import yaml

        from bayesgen.compare import load_preset

        spec = load_preset("tiny", None)
        spec["name"] = "my-comparison"
        spec.pop("source", None)  # where load_preset read it from, not a preset key
        (self.root / "my-comparison.yaml").write_text(yaml.safe_dump(spec))

    def _images(self, folder: Path, size: int, classes=("cat", "dog"), per_class=3) -> None:
        rng = np.random.default_rng(0)
        for cls in classes:
            (folder / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / cls / f"{i}.png")

    def _afhqv2(self) -> None:
        self._images(self.root / "downloads/afhqv2", 64)

    def _afhqv2_zip(self) -> None:
        from bayesgen.data import prepare_image_zip

        self.need("afhqv2", None)
        prepare_image_zip(self.root / "downloads/afhqv2", self.root / "data/afhqv2-32x32.zip",
                          resolution=32, progress=False)

    def _imagenet_npz(self) -> None:
        src, rng = self.root / "data/imagenet32/data", np.random.default_rng(0)
        src.mkdir(parents=True)
        for name, n in [("train_data_batch_1", 30), ("train_data_batch_2", 20), ("val_data", 10)]:
            np.savez(src / f"{name}.npz", data=rng.integers(0, 256, (n, 3 * 32 * 32),
                                                            dtype=np.uint8),
                     labels=rng.integers(1, 1001, n))

    def _if_image(self) -> None:
        from bayesgen.data import prepare_image_zip

        self._images(self.root / "if-images", 8, classes=("a",), per_class=24)
        data = prepare_image_zip(self.root / "if-images", self.root / "if-tiny.zip",
                                 progress=False)
        self._train("experiment=cifar10-if-prp", f"data.root={data}", "data.val_size=8",
                    "data.data_shape=[3,8,8]", "data.batch_size=8", "data.eval_batch_size=8",
                    "data.num_workers=0", "net.model_channels=16", "net.channel_mult=[1,1]",
                    "net.num_blocks=1", "net.attn_resolutions=[4]", "net.dropout=0",
                    "trainer.max_steps=2", "trainer.val_check_interval=2",
                    "trainer.limit_val_batches=1", "checkpoint.every_n_train_steps=2",
                    "optim.warmup_steps=1", "sample.n=4", "sample.frames=2",
                    "method.sample_kwargs.n_steps=3", "evaluate.max_batches=1",
                    "run_dir=runs/cifar10-if-prp/2026-11-30_08-00-00")


# ---- running a line ---------------------------------------------------------------------------
def _key(arg: str) -> str | None:
    return arg.split("=", 1)[0].lstrip("+~") if "=" in arg and not arg.startswith("-") else None


def _argv(line: str, run: Run, tmp: Path | None = None) -> list[str]:
    """The README line as argv, placeholders replaced and shrunk."""
    for old, new in run.replace:
        line = line.replace(old, new.format(tmp=tmp))
    argv = shlex.split(line)
    for override in run.shrink:
        key = _key(override)
        at = [i for i, a in enumerate(argv) if _key(a) == key]
        if at:
            argv[at[0]] = override
        else:
            argv.append(override)
    return argv


STAMP = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}")


def _mask(lines: list[str]) -> list[str]:
    """Lines with numbers, timestamps and trailing spaces made comparable."""
    return [re.sub(r"-?\d[\d,]*(\.\d+)?(e-?\d+)?", "N", x).rstrip() for x in lines
            if x.strip() and "━" not in x]  # progress bars: transient on a terminal


def _expected(command: Command, run: Run, tmp: Path) -> list[str]:
    lines = [x for x in command.output if x.strip() and x.strip() != "..."]
    for old, new in run.replace:
        lines = [x.replace(old, new.format(tmp=tmp)) for x in lines]
    return lines


def _execute(argv: list[str], capfd) -> tuple[int, list[str]]:
    if argv[0] == "torchrun":
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", *argv[1:]],
                              env=env, capture_output=True, text=True, timeout=600)
        return proc.returncode, (proc.stdout + proc.stderr).splitlines()
    if "|" in argv:
        cut = argv.index("|")
        rc = _run_main(argv[1:cut])
        out = capfd.readouterr().out
        proc = subprocess.run(argv[cut + 1:], input=out, capture_output=True, text=True)
        return rc or proc.returncode, proc.stdout.splitlines()
    assert argv[0] == "bayesgen", argv
    rc = _run_main(argv[1:])
    captured = capfd.readouterr()
    return rc, (captured.out + captured.err).splitlines()


def _params():
    for command in COMMANDS:
        run = RUN.get(command.line)
        if run is None:
            continue
        marks = [pytest.mark.slow] if run.slow else []
        yield pytest.param(command, run, id=command.line[:70], marks=marks)


@pytest.mark.parametrize("command, run", list(_params()))
def test_documented_command_runs(command, run, workspace, monkeypatch, capfd, one_thread):
    monkeypatch.chdir(workspace.root)
    monkeypatch.setenv("BAYESGEN_CACHE_DIR", str(workspace.root.parent / "cache"))
    tmp = workspace.root.parent
    (tmp / "empty").mkdir(exist_ok=True)
    for what in run.needs:
        workspace.need(what, monkeypatch)
    capfd.readouterr()
    argv = _argv(command.line, run, tmp)
    if run.as_info:
        assert argv[:2] == ["bayesgen", "train"]
        argv = ["bayesgen", "info", *argv[2:]]
    rc, out = _execute(argv, capfd)
    assert rc == run.rc, f"{' '.join(argv)} exited {rc}:\n" + "\n".join(out[-20:])
    if run.output is None:
        return
    expected = _expected(command, run, tmp)
    assert expected, f"{command.page} shows no output after {command.line}"
    if run.output == "exact":  # timestamps of run directories aside
        assert [STAMP.sub("<time>", x.rstrip()) for x in out if x.strip()] == [
            STAMP.sub("<time>", x) for x in expected]
    else:  # the same lines with other numbers (a tiny run, shrunk options)
        assert _mask(out) == _mask(expected)
