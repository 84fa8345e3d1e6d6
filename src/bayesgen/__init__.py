"""bayesgen: generative models built on Bayesian inference.

Bayesian Sample Inference (``BSI``), Bayesian Flow Networks (``BFN``) for continuous,
discretized and discrete data, Inflationary Flows (``InflationaryFlow``), and Variational
Diffusion Models (``VDM``) as the baseline they compare against. Each method is one
self-contained file in ``bayesgen.methods`` that wraps any network ``model(x, t)``.
"""

from bayesgen.methods.bfn import BFN
from bayesgen.methods.bsi import BSI, Discretization
from bayesgen.methods.inflationary import InflationaryFlow
from bayesgen.methods.vdm import VDM

__all__ = ["BFN", "BSI", "VDM", "Discretization", "InflationaryFlow"]
__version__ = "0.1.0"
