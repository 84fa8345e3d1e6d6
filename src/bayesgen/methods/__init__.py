"""The math of each method, one self-contained file per method (torch + einops only)."""

from bayesgen.methods.bfn import BFN
from bayesgen.methods.bsi import BSI, Discretization
from bayesgen.methods.inflationary import InflationaryFlow

__all__ = ["BFN", "BSI", "Discretization", "InflationaryFlow"]
