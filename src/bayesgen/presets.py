"""The ``bayesgen compare`` presets (``conf/compare/*.yaml``): found and checked without torch,
so that the command line reports a bad preset at once."""

from __future__ import annotations

from pathlib import Path

from bayesgen.names import name_problem

PRESET_DIR = Path(__file__).parent / "conf" / "compare"


def load_preset(preset: str | None = None, config: str | None = None) -> dict:
    """A preset by name (``conf/compare/<name>.yaml``) or from a YAML file, checked."""
    if (preset is None) == (config is None):
        raise ValueError("give preset=NAME (one of " + ", ".join(list_presets())
                         + ") or config=FILE.yaml")
    if config is None and (problem := name_problem(preset, "preset=")):
        raise ValueError(problem)
    path = Path(config) if config else PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ValueError(f"no compare preset {path}; presets: {', '.join(list_presets())}")
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(OmegaConf.load(path)) or {}
    unknown = set(spec) - {"name", "description", "overrides", "methods", "budget", "samples",
                           "evaluate_overrides"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    if not isinstance(spec.get("methods"), dict) or not spec["methods"]:
        raise ValueError(f"{path}: 'methods' must map labels to lists of overrides")
    budget = spec.setdefault("budget", {})
    if set(budget) - {"steps", "seconds"} or len(budget) != 1:
        raise ValueError(f"{path}: budget must be {{steps: N}} or {{seconds: S}}")
    spec.setdefault("name", path.stem)
    for what, value in (("name: ", spec["name"]), *(("methods: ", m) for m in spec["methods"])):
        if problem := name_problem(value, what):  # <out>/<name>/runs/<label>/
            raise ValueError(f"{path}: {problem}")
    spec.setdefault("overrides", [])
    spec.setdefault("samples", 64)
    spec["source"] = str(path)
    return spec


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
