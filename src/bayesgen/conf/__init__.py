"""bayesgen's Hydra configuration; importing it registers the resolvers the YAML files use."""

from omegaconf import OmegaConf


def _short_class(target: str) -> str:
    """``bayesgen.nets.MLP`` -> ``mlp``: a class path as a short run-name part."""
    return str(target).rsplit(".", 1)[-1].lower()


OmegaConf.register_new_resolver("bayesgen_short_class", _short_class, replace=True)
