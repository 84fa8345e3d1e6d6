"""bayesgen: generative models built on Bayesian inference.

Bayesian Sample Inference (``BSI``), Bayesian Flow Networks (``BFN``) for continuous,
discretized and discrete data, Inflationary Flows (``InflationaryFlow``), and Variational
Diffusion Models (``VDM``) as the baseline they compare against. Each method is one
self-contained file in ``bayesgen.methods`` that wraps any network ``model(x, t)``.

Trained runs: ``run = bayesgen.load("runs/…")`` (a run directory, a checkpoint or a
``save_pretrained`` folder), ``run.sample(16)``, ``run.elbo(x)``, ``run.save_pretrained(dir)``,
``bayesgen.from_pretrained(dir)`` (see ``bayesgen.run``). The authors' checkpoints:
``bayesgen.convert(file, out, format=…, experiment=…)`` (see ``bayesgen.conversion``).

Every name is imported on first use (PEP 562), so that ``import bayesgen.cli`` and
``bayesgen --help`` answer without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names, for type checkers and editors
    from bayesgen.conversion import ConversionError, convert
    from bayesgen.methods.bfn import BFN
    from bayesgen.methods.bsi import BSI, Discretization
    from bayesgen.methods.inflationary import InflationaryFlow
    from bayesgen.methods.vdm import VDM
    from bayesgen.run import Run, from_pretrained, load, save_pretrained

__all__ = ["BFN", "BSI", "VDM", "ConversionError", "Discretization", "InflationaryFlow", "Run",
           "convert", "from_pretrained", "load", "save_pretrained"]
__version__ = "0.1.0"

_HOME = {"BFN": "bayesgen.methods.bfn", "BSI": "bayesgen.methods.bsi",
         "Discretization": "bayesgen.methods.bsi", "VDM": "bayesgen.methods.vdm",
         "InflationaryFlow": "bayesgen.methods.inflationary",
         **dict.fromkeys(("Run", "from_pretrained", "load", "save_pretrained"), "bayesgen.run"),
         **dict.fromkeys(("convert", "ConversionError"), "bayesgen.conversion")}


def __getattr__(name: str):
    """Import the module that defines ``name`` when it is first asked for."""
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bayesgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
