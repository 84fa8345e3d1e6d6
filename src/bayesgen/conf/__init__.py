"""bayesgen's Hydra configuration; importing it registers the resolvers the YAML files use."""

from omegaconf import OmegaConf


def _short_class(target: str) -> str:
    """``bayesgen.nets.MLP`` -> ``mlp``: a class path as a short run-name part."""
    return str(target).rsplit(".", 1)[-1].lower()


OmegaConf.register_new_resolver("bayesgen_short_class", _short_class, replace=True)


def _gpus(accelerator: str, devices) -> int | None:
    """GPUs per Slurm node for ``trainer.accelerator``/``trainer.devices``: none for a CPU run
    (``sbatch --gpus-per-node`` on a node without GPUs is refused)."""
    return None if str(accelerator) == "cpu" else devices


OmegaConf.register_new_resolver("bayesgen_gpus", _gpus, replace=True)


def _world(devices, num_nodes) -> int:
    """Processes in all: ``trainer.devices`` × ``trainer.num_nodes``."""
    return int(devices) * int(num_nodes)


OmegaConf.register_new_resolver("bayesgen_world", _world, replace=True)
