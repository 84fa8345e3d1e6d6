"""The command line as a thin layer: help, parser and completion from one spec per command; no
import cycles; the messages and run folders that had drifted."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bayesgen.cli import COMMANDS, bash_completion, main
from bayesgen.cli.options import UsageError, parse
from bayesgen.cli.train import choices

SRC = Path(__file__).resolve().parents[1] / "src" / "bayesgen"
README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = [README, *sorted((README.parent / "docs").rglob("*.md"))]  # the README and the guides


def docs_text() -> str:
    return "\n".join(p.read_text() for p in DOCS)


def leaves():
    """(program name, command) of every command and subcommand that takes options."""
    for name, c in COMMANDS.items():
        if c.subcommands:
            yield from ((f"bayesgen {name} {s}", sub) for s, sub in c.subcommands.items()
                        if sub.options)
        elif not c.passthrough:
            yield f"bayesgen {name}", c


def help_of(argv: list[str], capsys) -> str:
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("prog,command", list(leaves()), ids=lambda v: str(v).split(" ")[-1])
def test_help_lists_exactly_the_options_the_parser_accepts(prog, command, capsys, tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)  # options that must name an existing path get one
    for o in command.options:
        if o.exists:
            (tmp_path / o.type.example).touch()
    text = help_of(prog.split()[1:], capsys)
    assert text.startswith(f"usage: {prog}")
    listed = re.findall(r"^  ([a-z_0-9]+)=(\S+)", text.split("\noptions:\n", 1)[1], re.M)
    assert [name for name, _ in listed] == [o.name for o in command.options]
    required = {o.name: o for o in command.options if o.required}
    for name, metavar in listed:  # each listed option parses with a sample value of its type
        option = command.option(name)
        assert metavar == option.type.metavar
        args = [f"{k}={o.type.example}" for k, o in required.items() if k != name]
        opts = parse(command, [*args, f"{name}={option.type.example}"], prog)
        assert name in opts.given
    with pytest.raises(UsageError, match="did you mean"):  # a near miss is named
        parse(command, [f"{listed[0][0]}x=1"], prog)
    with pytest.raises(UsageError, match="valid options"):
        parse(command, ["zzzqqq=1"], prog)
    for name in required:  # a missing required option is named
        with pytest.raises(UsageError, match=f"missing required option {name}="):
            parse(command, [f"{k}={o.type.example}" for k, o in required.items() if k != name],
                  prog)


def test_help_shows_defaults_from_the_spec(capsys):
    text = help_of(["sample"], capsys)
    assert re.search(r"frames=N\s+frames of the sampling animation \(default 20\)", text)
    assert re.search(r"ckpt=PATH\s+run directory or \.ckpt file \(required\)", text)
    assert "out=FILE.json" in help_of(["fid", "calc"], capsys)  # once missing


def test_top_level_usage(capsys):
    assert main([]) == 2  # no command: usage on stderr, exit status 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: bayesgen COMMAND")
    for argv in (["--help"], ["-h"], ["help"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert all(f"\n  {name} " in out for name in COMMANDS), out
    assert main(["help", "sample"]) == 0 and "usage: bayesgen sample" in capsys.readouterr().out
    assert main(["sampel"]) == 2
    assert "did you mean sample?" in capsys.readouterr().err
    assert main(["fid"]) == 2 and "needs a subcommand: ref | gen | calc" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "bayesgen.cli", "sample", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: bayesgen sample")


def test_bash_completion_names_every_command_and_option(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert script == bash_completion() + "\n" and "complete -F _bayesgen bayesgen" in script
    for name in COMMANDS:
        assert re.search(rf"\b{re.escape(name)}\b", script)
    for _, leaf in leaves():
        for o in leaf.options:
            assert f"{o.name}=" in script
    bash = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert bash.returncode == 0, bash.stderr  # valid bash syntax


def _experiments_named(text: str) -> set[str]:
    return set(re.findall(r"experiment=([A-Za-z0-9_.<>-]+[A-Za-z0-9_])", text))


def test_every_experiment_named_in_help_and_readme_exists(capsys):
    real = set(choices("experiment"))
    texts = [help_of(prog.split()[1:], capsys) for prog, _ in leaves()]
    texts += [help_of([name], capsys) for name in COMMANDS]
    assert main(["--help"]) == 0
    texts.append(capsys.readouterr().out)
    named = set().union(*map(_experiments_named, texts))
    assert named and named <= real, named - real
    readme = {n for n in _experiments_named(docs_text())  # not placeholders: NAME, <x>
              if "<" not in n and not n.isupper()}
    assert readme <= real, readme - real


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("bayesgen")}


def _module_graph(top_level_only: bool, under: str = "bayesgen") -> dict[str, set[str]]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        if name.startswith(under):
            graph[name] = {m for m in _imports(path, top_level_only) if m in modules
                           and m != name and m.startswith(under)}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack, node, nxt]
            if nxt not in state and (found := visit(nxt, [*stack, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_no_import_cycles():
    graph = _module_graph(top_level_only=True)
    assert "bayesgen.cli.sample" in graph["bayesgen.cli"]  # the graph sees the imports
    assert _cycle(graph) is None, _cycle(graph)
    # within the CLI not even a deferred import goes back up; the library never imports it
    assert _cycle(_module_graph(False, "bayesgen.cli")) is None
    library = _module_graph(False)
    users = [m for m, deps in library.items() if not m.startswith("bayesgen.cli")
             and any(d.startswith("bayesgen.cli") for d in deps)]
    assert users == []
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # the check can fail


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(n for n in _module_graph(False) if not n.endswith("__main__"))
    code = "import importlib, sys\nfor n in sys.argv[1:]: importlib.import_module(n)"
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cli_modules_are_short():
    for path in (SRC / "cli").glob("*.py"):
        assert len(path.read_text().splitlines()) < 200, path


# ---- drifted messages and folders ----------------------------------------------------------
def test_from_ckpt_errors_name_from_ckpt(tmp_path, capsys):
    assert main(["train", f"from_ckpt={tmp_path}/nothing"]) == 2
    err = capsys.readouterr().err
    assert "from_ckpt=" in err and " ckpt=" not in err
    assert main(["sample", f"ckpt={tmp_path}/nothing"]) == 2
    assert "pass ckpt=" in capsys.readouterr().err


def test_simulate_prev_melt_refuses_options_it_would_ignore(tmp_path, capsys):
    base = ["simulate", "score=discrete", "data=circles", f"prev_melt={tmp_path}/m.npz"]
    assert main([*base, "sim=roundtrip", "n=5"]) == 2
    assert "n= does not apply with prev_melt=" in capsys.readouterr().err
    assert main(base) == 2
    assert "add sim=roundtrip" in capsys.readouterr().err


def test_run_names_tell_settings_apart():
    from bayesgen.training.build import compose_config

    names = {compose_config(o).name for o in (
        [], ["experiment=digits-bsi"], ["method=bfn_continuous"], ["method=bfn_discretized"],
        ["method=bfn_discrete", "data=text8", "net=transformer"],
        ["method=bfn_discrete", "data=text8", "net=mlp"])}
    assert len(names) == 6, names
    assert compose_config(["experiment=digits-bsi"]).name == "digits-bsi"
    assert compose_config(["data=moons"]).name == "moons-bsi-mlp"


def test_failed_start_leaves_no_folder(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "data=imagenet32", f"data.root={tmp_path}/none", "net=mlp",
                 f"hydra.run.dir={runs}/x/stamp"]) == 2
    assert "bayesgen prepare imagenet" in capsys.readouterr().err
    assert not (runs / "x").exists()


def test_compile_on_cpu_warns():
    from omegaconf import OmegaConf

    from bayesgen.training.fit import compile_warning

    assert "takes minutes" in compile_warning(OmegaConf.create({"compile": True}), "cpu")
    assert compile_warning(OmegaConf.create({"compile": False}), "cpu") is None
    assert compile_warning(OmegaConf.create({"compile": True}), "cuda") is None


def test_likelihood_line_says_continuous_density():
    from bayesgen.data.info import DatasetInfo
    from bayesgen.training.fit import likelihood_line

    m = {"bpd": -1.5, "bpd_se": 0.1, "nats_per_dim": -1.04, "nats_per_dim_se": 0.07}
    toy = likelihood_line(m, DatasetInfo("moons", (2,), "flat"), "test")
    assert "nats/dim" in toy and "density" in toy and "bits/dim" not in toy
    image = likelihood_line(m, DatasetInfo("digits", (1, 8, 8), "image", num_bins=17), "test")
    assert "bits/dim" in image and "density" not in image and "p(x|y)" not in image
    cond = likelihood_line(m | {"bpd_marginal": -1.45, "num_labels": 10},
                           DatasetInfo("digits", (1, 8, 8), "image", num_bins=17), "test")
    assert "of p(x|y); of p(x) ≤ -1.4500 bits/dim (+ log2(10)/D" in cond


TOY = ["data=moons", "net.hidden=16", "net.depth=1", "trainer.max_steps=3",
       "trainer.val_check_interval=3", "trainer.limit_val_batches=1", "optim.warmup_steps=1",
       "ema.warmup_steps=1", "sample.n=4", "sample.frames=2", "method.sample_kwargs.k=3",
       "method.eval_kwargs.n_measure_samples=1", "evaluate.max_batches=1", "logger=none"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A 3-step BSI run on moons, with the progress bar's label recorded at every step."""
    import lightning as L

    from bayesgen.training.build import compose_config
    from bayesgen.training.callbacks import ProgressBar
    from bayesgen.training.fit import run_training

    class Labels(L.Callback):
        seen: list[str] = []

        def on_train_batch_end(self, trainer, *args) -> None:
            bar = next(c for c in trainer.callbacks if isinstance(c, ProgressBar))
            self.seen.append(bar.progress.tasks[bar.train_progress_bar_id].description)

    run = tmp_path_factory.mktemp("toy")
    run_training(compose_config([*TOY, f"run_dir={run}"]), callbacks=[Labels()])
    return run, Labels.seen


def test_progress_label_follows_the_step(toy_run):
    _, labels = toy_run
    assert [label.split(" (")[0].strip() for label in labels] == [
        "step 1/3", "step 2/3", "step 3/3"]


def test_evaluate_writes_a_new_file_each_time(toy_run, capsys):
    run, _ = toy_run
    for expected in ("evaluate_test.json", "evaluate_test_2.json"):
        assert main(["evaluate", f"ckpt={run}", "max_batches=1", "samples=1"]) == 0
        out = capsys.readouterr().out
        assert f"wrote {run / expected}" in out and json.loads((run / expected).read_text())
        assert "nats/dim (negative log-density of continuous data" in out
        assert "bits/dim" not in out


def test_label_on_unconditional_model_is_refused(toy_run, capsys):
    run, _ = toy_run
    assert main(["sample", f"ckpt={run}", "label=1", "n=2", "k=2"]) == 2
    assert "needs a class-conditional model" in capsys.readouterr().err


def inline_commands() -> list[str]:
    """The inline `bayesgen …` spans (prose, tables) of the README and the guides,
    placeholders and all."""
    return sorted(set(re.findall(r"`(bayesgen [^`]*)`", docs_text())))


@pytest.mark.parametrize("line", inline_commands())
def test_inline_readme_commands_name_real_commands_and_options(line):
    """The fenced command lines run in tests/test_docs.py; the inline ones in the prose are
    held to their names: the command (and subcommand) exists, each key=value is an option it
    takes (train: composes with Hydra), each experiment= names a file. Placeholders (RUN, …,
    NAME, COMMAND) are not values to check."""
    from bayesgen.training.build import compose_config

    words = line.split()[1:]
    if not words or words[0] in ("…", "COMMAND"):
        return
    if words[0] in ("help", "--help", "-h"):  # bayesgen help [COMMAND]: main's own
        assert main([words[0]]) == 0
        return
    if "|" in words[0]:  # `bayesgen sample|evaluate`: each alternative is a command
        assert all(w in COMMANDS for w in words[0].split("|")), line
        return
    command = COMMANDS.get(words[0])
    assert command is not None, f"README names `{line}`: no command {words[0]!r}"
    words = words[1:]
    if command.subcommands:
        if not words:
            return
        assert words[0] in command.subcommands, f"README names `{line}`: no {words[0]!r}"
        command, words = command.subcommands[words[0]], words[1:]
    pairs = [w.split("=", 1) for w in words if "=" in w and not w.startswith("-")]
    names = {o.name for o in command.options}
    if command.passthrough:  # Hydra overrides beside the command's own options
        concrete = [f"{k}={v}" for k, v in pairs if (k not in names or k == "experiment")
                    and not re.search(r"RUN|…|NAME", v) and k != "from_ckpt"]
        sweep = "-m" in words or "--multirun" in words
        compose_config([o.split(",")[0] if sweep else o for o in concrete])  # a sweep's first
        return
    for key, _ in pairs:
        assert key in names, f"README names `{line}`: {key}= is not an option of it"
