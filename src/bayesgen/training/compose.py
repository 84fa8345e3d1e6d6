"""Composing a configuration (Hydra, OmegaConf; no torch, no Lightning), so that
``bayesgen train``'s configuration errors answer before anything heavy is imported."""

from __future__ import annotations

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

import bayesgen.conf  # noqa: F401  (registers the resolvers of the YAML files)

# keys of a method config that configure evaluation and sampling, not the constructor
METHOD_EXTRA_KEYS = ("name", "eval_kwargs", "sample_kwargs")


class ConfigError(ValueError):
    """A configuration the user can fix; its message says how."""


def compose_config(overrides: list[str], hydra: bool = False) -> DictConfig:
    """Compose ``conf/config.yaml`` with command-line ``overrides`` (Hydra syntax); ``hydra``
    keeps Hydra's own node (launcher, sweeper, callbacks) under ``cfg.hydra``."""
    with initialize_config_module(config_module="bayesgen.conf", version_base=None):
        return compose(config_name="config", overrides=list(overrides),
                       return_hydra_config=hydra)
