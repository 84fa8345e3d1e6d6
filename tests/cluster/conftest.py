"""A real one-machine Slurm cluster (tests/cluster/start_slurm.sh) for the tests marked
``cluster``; they skip, with the script's reason, where it cannot start (no root, no apt)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def slurm():
    """Start the cluster (unless it already runs), yield its environment, stop what was started."""
    home = os.environ.get("SLURM_HOME", "/tmp/bayesgen-slurm")
    conf = Path(home) / "slurm.conf"
    running = conf.is_file() and subprocess.run(
        ["scontrol", "ping"], env=dict(os.environ, SLURM_CONF=str(conf)), capture_output=True,
        text=True).stdout.count("UP") > 0 if shutil.which("scontrol") else False
    start = subprocess.run(["bash", str(HERE / "start_slurm.sh")], capture_output=True, text=True,
                           env=dict(os.environ, SLURM_HOME=home))
    if start.returncode != 0:
        pytest.skip((start.stderr.strip().splitlines() or ["start_slurm.sh failed"])[-1])
    os.environ["SLURM_CONF"] = str(conf)
    yield {"SLURM_CONF": str(conf), "SLURM_HOME": home}
    if not running:
        subprocess.run(["bash", str(HERE / "stop_slurm.sh")], capture_output=True,
                       env=dict(os.environ, SLURM_HOME=home))

