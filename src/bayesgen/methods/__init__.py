"""The math of each method, one self-contained file per method (torch + einops only)."""

from bayesgen.methods.bfn import BFN
from bayesgen.methods.bsi import BSI, Discretization
from bayesgen.methods.inflationary import InflationaryFlow
from bayesgen.methods.vdm import VDM

__all__ = ["BFN", "BSI", "VDM", "Discretization", "InflationaryFlow"]
