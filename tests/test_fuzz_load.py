"""Property-based fuzzing of ``bayesgen.load`` and ``from_pretrained`` (issue 22) on generated
folder contents: a ``save_pretrained`` folder and a run directory (``config.yaml``,
``ema.safetensors``, ``checkpoints/last.ckpt``, ``metrics.json``, ``.hydra/overrides.yaml``)
with files missing, truncated, renamed, swapped, overwritten or edited. Each either loads or
raises bayesgen's one-line ``LoadError``/``CheckpointError`` — never another exception."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

import bayesgen
from bayesgen.run import LoadError, save_pretrained
from bayesgen.training.build import build_datamodule, build_method, compose_config
from bayesgen.training.checkpoint import CheckpointError, config_to_text
from fuzzing import VALUES, assert_one_line, examples, guard

ERRORS = (LoadError, CheckpointError)


def _templates() -> Path:
    """A save_pretrained folder and a run directory of an untrained tiny BSI model."""
    root = Path(tempfile.mkdtemp(prefix="bayesgen-fuzz-load-"))
    atexit.register(shutil.rmtree, root, True)
    cfg = compose_config(["experiment=digits-bsi", "net.hidden=16", "net.depth=1"])
    method = build_method(cfg, build_datamodule(cfg))
    save_pretrained(method, root / "pretrained", cfg)
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    shutil.copy(root / "pretrained" / "model.safetensors", run / "ema.safetensors")
    (run / "metrics.json").write_text(json.dumps({"bpd": 1.5}))
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=digits-bsi\n")
    torch.save({"state_dict": {f"method.{k}": v for k, v in method.state_dict().items()},
                "bayesgen_config": config_to_text(cfg), "global_step": 1},
               run / "checkpoints" / "last.ckpt")
    return root


TEMPLATES = _templates()
FILES = {"pretrained": ["config.json", "model.safetensors", "README.md"],
         "run": ["config.yaml", "ema.safetensors", "checkpoints/last.ckpt", "metrics.json",
                 ".hydra/overrides.yaml"]}
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _edit_json(path: Path, data) -> None:
    """Replace one value somewhere in a JSON file (or the whole of it) by a generated one."""
    saved = json.loads(path.read_text())
    node, keys = saved, []
    while isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node)))
        keys.append(key)
        if not isinstance(node[key], dict) or data.draw(st.booleans()):
            break
        node = node[key]
    value = data.draw(JSON_VALUES)
    if keys:
        node[keys[-1]] = value
    else:
        saved = value
    path.write_text(json.dumps(saved))


def _edit_yaml(path: Path, data) -> None:
    """Replace one leaf of a YAML file by a generated override value."""
    cfg = OmegaConf.load(path)
    flat = [k for k in _leaf_keys(OmegaConf.to_container(cfg))]
    key = data.draw(st.sampled_from(flat))
    text = data.draw(VALUES)
    OmegaConf.update(cfg, key, text, force_add=True)
    path.write_text(OmegaConf.to_yaml(cfg))


def _leaf_keys(node, prefix=""):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaf_keys(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix


def mutate(folder: Path, kind: str, data) -> None:
    """One generated change to the files of ``folder``."""
    files = FILES[kind]
    op = data.draw(st.sampled_from(["delete", "truncate", "rename", "swap", "garbage", "edit",
                                    "empty"]))
    name = data.draw(st.sampled_from(files))
    path = folder / name
    if not path.is_file():
        return
    if op == "delete":
        path.unlink()
    elif op == "truncate":
        size = path.stat().st_size
        path.write_bytes(path.read_bytes()[:data.draw(st.integers(0, max(size - 1, 0)))])
    elif op == "empty":
        path.write_bytes(b"")
    elif op == "rename":
        target = folder / data.draw(st.sampled_from([*files, "x.bin", "config.yml",
                                                     "Model.safetensors"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
    elif op == "swap":
        other = folder / data.draw(st.sampled_from(files))
        if other.is_file() and other != path:
            a, b = path.read_bytes(), other.read_bytes()
            path.write_bytes(b)
            other.write_bytes(a)
    elif op == "garbage":
        path.write_bytes(data.draw(st.binary(max_size=200)))
    elif name.endswith(".json"):
        try:
            _edit_json(path, data)
        except ValueError:  # not JSON any more (an earlier change)
            pass
    elif name.endswith(".yaml"):
        try:
            _edit_yaml(path, data)
        except Exception:  # noqa: BLE001 - not YAML any more (an earlier change)
            pass


@pytest.mark.parametrize("kind", ["pretrained", "run", "ckpt"])
@examples(fast=15, long=500)
@given(data=st.data())
def test_fuzz_load(kind, data):
    with guard() as tmp:
        folder = tmp / "model"
        shutil.copytree(TEMPLATES / ("pretrained" if kind == "pretrained" else "run"), folder)
        for _ in range(data.draw(st.integers(1, 3))):
            mutate(folder, "pretrained" if kind == "pretrained" else "run", data)
        target = folder / "checkpoints" / "last.ckpt" if kind == "ckpt" else folder
        try:
            if kind == "pretrained" and data.draw(st.booleans()):
                bayesgen.from_pretrained(target)
            else:
                bayesgen.load(target)
        except ERRORS as e:
            assert_one_line(e)


def test_templates_load():
    """The unchanged folders load (so that the fuzzing starts from something that works)."""
    for path in (TEMPLATES / "pretrained", TEMPLATES / "run",
                 TEMPLATES / "run" / "checkpoints" / "last.ckpt"):
        assert bayesgen.load(path).num_parameters > 0


@pytest.mark.parametrize("kind, name, content", [
    ("pretrained", "config.json", b"\x19z\x9ei\x17"),            # not UTF-8: UnicodeDecodeError
    ("pretrained", "config.json", b"[1, 2]"),                    # JSON, not a mapping
    ("pretrained", "config.json", b'{"library": "bayesgen", "config": 1, "data_info": {}}'),
    ("pretrained", "model.safetensors", b"\x00" * 20),           # SafetensorError
    ("run", "ema.safetensors", b"abc"),                          # truncated: SafetensorError
    ("run", "config.yaml", b"- a list\n"),                       # YAML, not a mapping
    ("run", "config.yaml", b"\xc2\xc2"),                         # not UTF-8
])
def test_found_damaged_folders(kind, name, content):
    """Inputs the fuzzing found: each was a traceback of another library before."""
    with guard() as tmp:
        folder = tmp / "model"
        shutil.copytree(TEMPLATES / kind, folder)
        if kind == "run":  # the run directory's ema.safetensors and config.yaml, not the ckpt
            (folder / "checkpoints" / "last.ckpt").unlink()
        (folder / name).write_bytes(content)
        with pytest.raises(ERRORS) as e:
            bayesgen.load(folder)
        assert_one_line(e.value)


@pytest.mark.parametrize("content", [
    b"j1",        # found by the long profile (garbage swapped into last.ckpt): struct.error
    b"h",         # BINGET with nothing to read
    b"\x80\x02", # a pickle protocol header only
])
def test_found_damaged_checkpoints(content):
    """A ``last.ckpt`` that is not a PyTorch archive fails in the unpickler's own ways; each is
    one `CheckpointError`, whether the run directory or the file itself is loaded."""
    with guard() as tmp:
        folder = tmp / "model"
        shutil.copytree(TEMPLATES / "run", folder)
        ckpt = folder / "checkpoints" / "last.ckpt"
        ckpt.write_bytes(content)
        (folder / "ema.safetensors").unlink()  # so that the run directory reads the ckpt
        for target in (folder, ckpt):
            with pytest.raises(ERRORS) as e:
                bayesgen.load(target)
            assert_one_line(e.value)


def test_damaged_records_do_not_stop_loading():
    """A damaged metrics.json or .hydra/overrides.yaml is a record, not the model: it loads."""
    with guard() as tmp:
        folder = tmp / "run"
        shutil.copytree(TEMPLATES / "run", folder)
        (folder / "metrics.json").write_bytes(b"\xff{")
        (folder / ".hydra" / "overrides.yaml").write_bytes(b"{a: [")
        run = bayesgen.load(folder)
        assert run.metrics is None and run.command is None
