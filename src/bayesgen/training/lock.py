"""One training process per run directory.

``RUN/.bayesgen.lock`` is held with ``flock`` for the life of the run and names its holder
(PID, host, start time, Slurm job). The kernel drops a ``flock`` when its process dies, even by
``kill -9``, so a lock left by a dead run is taken over (with a message); where the filesystem
has no ``flock``, a holder on this host whose PID is gone, or an earlier incarnation of the
same Slurm job (a requeue), counts as dead. The processes that DDP starts for ranks > 0 belong
to the run of rank 0 and take no lock. The file is never deleted (deleting a lock file races
with a process that has just opened it); a clean release empties it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".bayesgen.lock"
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


class RunDirBusyError(ValueError):
    """Another process trains in this run directory."""


def is_primary_process() -> bool:
    """False in the processes that a distributed launcher starts for ranks other than 0."""
    return all(os.environ.get(v, "0") in ("", "0") for v in _RANK_VARIABLES)


def _job() -> str | None:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict) -> str:
    text = f"PID {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
    if holder.get("slurm_job"):
        text += f", Slurm job {holder['slurm_job']}"
    return text


class RunLock:
    """``with RunLock(run_dir, say):`` — raises `RunDirBusyError` (one line naming the other
    process) if another live process holds the directory."""

    def __init__(self, run_dir: str | os.PathLike, say=print):
        self.path = Path(run_dir) / LOCK_NAME
        self.say = say
        self.fd: int | None = None

    def _read(self, fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        try:
            holder = json.loads(data.decode() or "{}")
        except (ValueError, UnicodeDecodeError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _busy(self, holder: dict) -> RunDirBusyError:
        return RunDirBusyError(
            f"run directory {self.path.parent} is in use by another bayesgen run "
            f"({_describe(holder)}); wait for it to end, stop it, or pick another run_dir=")

    def acquire(self) -> RunLock:
        if not is_primary_process():
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def _lock(self, fd: int) -> None:
        import fcntl

        host = socket.gethostname()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            has_flock = True
        except BlockingIOError:
            raise self._busy(self._read(fd)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            has_flock = False
        if os.fstat(fd).st_ino != os.stat(self.path).st_ino:  # the file was replaced meanwhile
            other = os.open(self.path, os.O_RDONLY)
            try:
                raise self._busy(self._read(other))
            finally:
                os.close(other)
        holder = self._read(fd)
        if holder.get("pid") and holder.get("pid") != os.getpid():
            same_job = holder.get("slurm_job") and holder.get("slurm_job") == _job()
            dead_here = holder.get("host") == host and not _alive(int(holder["pid"]))
            if not has_flock and not (dead_here or same_job):
                raise self._busy(holder)
            why = ("an earlier run of this Slurm job" if same_job else
                   "it no longer runs" if dead_here or holder.get("host") == host else
                   "its lock was released")
            self.say(f"taking over the stale lock of {self.path.parent} ({_describe(holder)}): "
                     f"{why}")
        me = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "slurm_job": _job(), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
