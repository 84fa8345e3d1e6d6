"""bayesgen: generative models built on Bayesian inference (BSI, BFN, Inflationary Flows)."""

from bayesgen.methods.bsi import BSI, Discretization

__all__ = ["BSI", "Discretization"]
__version__ = "0.1.0"
