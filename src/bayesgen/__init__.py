"""bayesgen: generative models built on Bayesian inference.

Bayesian Sample Inference (``BSI``), Bayesian Flow Networks (``BFN``) for continuous,
discretized and discrete data, Inflationary Flows (``InflationaryFlow``), and Variational
Diffusion Models (``VDM``) as the baseline they compare against. Each method is one
self-contained file in ``bayesgen.methods`` that wraps any network ``model(x, t)``.

Trained runs: ``run = bayesgen.load("runs/…")`` (a run directory, a checkpoint or a
``save_pretrained`` folder), ``run.sample(16)``, ``run.elbo(x)``, ``run.save_pretrained(dir)``,
``bayesgen.from_pretrained(dir)`` (see ``bayesgen.run``).
"""

from bayesgen.methods.bfn import BFN
from bayesgen.methods.bsi import BSI, Discretization
from bayesgen.methods.inflationary import InflationaryFlow
from bayesgen.methods.vdm import VDM

__all__ = ["BFN", "BSI", "VDM", "Discretization", "InflationaryFlow", "Run", "from_pretrained",
           "load", "save_pretrained"]
__version__ = "0.1.0"

_RUN_API = ("Run", "from_pretrained", "load", "save_pretrained")


def __getattr__(name: str):
    """The run API is imported on first use: it needs OmegaConf and Hydra, the methods don't."""
    if name in _RUN_API:
        from bayesgen import run

        return getattr(run, name)
    raise AttributeError(f"module 'bayesgen' has no attribute {name!r}")
