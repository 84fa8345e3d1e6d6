"""Two nodes on one machine: `torchrun --nnodes=2 --nproc-per-node=1` twice, node ranks 0 and 1
over 127.0.0.1 (gloo), and `bayesgen train -m hydra/launcher=slurm trainer.num_nodes=2` on the
test cluster's two Slurm nodes (one task each, Lightning's SLURMEnvironment). The run trains with
a world size of 2, each rank on a distinct shard of every batch, rank 0 alone writing; a rank
killed mid-run stops the other with one line."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cluster_run import PYTHON, TINY, batch_rows, finish, job_env, job_id, job_log, submit

pytestmark = pytest.mark.cluster
TORCHRUN = str(Path(PYTHON).with_name("torchrun"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(run: Path, batches: Path, *extra: str, pace: float = 0.0) -> list[subprocess.Popen]:
    port, env = _port(), job_env(pace, batches)
    batches.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(
        [TORCHRUN, "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
         "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "bayesgen.cli", "train",
         *TINY, "trainer.num_nodes=2", "trainer.devices=1", f"run_dir={run}", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True) for rank in (0, 1)]


def _two_ranks_trained(outs: list[str], batches: Path, run: Path) -> None:
    """World size 2, both ranks on every step, each on its own half of the batch, outputs from
    rank 0 alone; ``outs``: the output of rank 0 and of rank 1."""
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in outs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in outs[1]
    r0, r1 = (batch_rows(batches / f"rank{r}.txt") for r in (0, 1))
    assert sorted(r0) == sorted(r1) == list(range(20))  # both ranks take every step
    for step in r0:  # half of the global batch each, no example on both
        assert len(r0[step]) == len(r1[step]) > 0 and not set(r0[step]) & set(r1[step])
    assert "wrote:" in outs[0] and "wrote:" not in outs[1]  # outputs from rank 0 alone
    csv = (run / "logs/metrics.csv").read_text().splitlines()
    assert len([row for row in csv if row.split(",")[-1] or row.split(",")[-2]]) > 0
    steps = [int(r.split(",")[3]) for r in csv[1:]]
    assert steps == sorted(steps)  # one writer: no row twice out of order


def test_two_nodes_train_with_world_size_2_on_distinct_shards(tmp_path):
    nodes = _nodes(tmp_path / "run", tmp_path / "batches")
    outs = [n.communicate(timeout=300)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    _two_ranks_trained(outs, tmp_path / "batches", tmp_path / "run")


def test_two_slurm_nodes_train_with_world_size_2_on_distinct_shards(slurm, tmp_path):
    """One job on the cluster's two nodes, one task each (srun); the nodes are this machine, so
    the rendezvous goes to 127.0.0.1 (a real cluster resolves the first node's name)."""
    sweep, batches = tmp_path / "sweep", tmp_path / "batches"
    batches.mkdir()
    deadline = time.monotonic() + 420
    command = submit(sweep, "trainer.num_nodes=2", "trainer.devices=1", batches=batches,
                     env={"MASTER_ADDR": "127.0.0.1"})
    job = job_id(sweep, deadline)
    finish(command, deadline)
    nodes = subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                           text=True).stdout
    assert "NumNodes=2" in nodes and "NumTasks=2" in nodes, nodes
    outs = [job_log(sweep, job, task) for task in ("0", "1")]
    _two_ranks_trained(outs, batches, sweep / "0")


def test_a_killed_rank_stops_the_other_with_one_line(tmp_path):
    nodes = _nodes(tmp_path / "run", tmp_path / "batches", pace=1.0)
    rank1 = tmp_path / "batches/rank1.txt"
    deadline = time.monotonic() + 240
    while not (rank1.is_file() and len(rank1.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline and nodes[1].poll() is None, "rank 1 never trained"
        time.sleep(0.5)
    worker = subprocess.run(["pgrep", "-P", str(nodes[1].pid)], capture_output=True,
                            text=True).stdout.split()
    os.kill(int(worker[0]), signal.SIGKILL)  # rank 1's training process, as the OOM killer does
    killed = time.monotonic()
    try:
        out = nodes[0].communicate(timeout=240)[0]
    finally:
        for n in nodes:
            if n.poll() is None:
                os.killpg(n.pid, signal.SIGKILL)
        nodes[1].communicate()
    waited = time.monotonic() - killed
    errors = [line for line in out.splitlines() if line.startswith("bayesgen: error:")]
    print(f"rank 0 stopped {waited:.0f} s after the kill: {errors}")
    assert nodes[0].returncode != 0 and len(errors) == 1, out[-3000:]
    assert "rank 1" in errors[0], errors
