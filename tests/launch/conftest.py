"""A real Slurm on localhost for the `slurm` tests: munged, slurmctld and two emulated nodes.

Invariant: the fixture only ever stops what it started (its own daemons, by PID, and the jobs of
its own private cluster), and every wait it does is bounded. Everything lives in one fresh folder
/tmp/sft-slurm-<uuid> (world-executable: munged refuses sockets under 0700 folders such as
pytest's tmp dirs); the folder is removed at teardown. Both nodes are this machine
(NodeAddr=127.0.0.1 on different slurmd ports), so a 2-node job gets SLURM_NODEID 0 and 1 but
node names do not resolve: jobs that need a main address set MASTER_ADDR=127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "scancel", "squeue", "sinfo")
NODES = ("n1", "n2")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
APT_COMMAND = (
    "apt-get update && apt-get install -y --no-install-recommends "
    "slurmctld slurmd slurm-client munge"
)


def _find(binary: str) -> str | None:
    return shutil.which(binary) or next(
        (str(p) for p in (Path("/usr/sbin") / binary, Path("/sbin") / binary) if p.exists()), None
    )


def _free_ports(count: int) -> list[int]:
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class LocalSlurm:
    """A private two-node Slurm cluster; `env` is what client commands and jobs need."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.socket = root / "munge" / "munge.socket.2"
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []  # daemons' stdout/stderr files, open while they run
        self.env = dict(os.environ, SLURM_CONF=str(self.conf), MUNGE_SOCKET=str(self.socket))
        self.env.pop("SLURM_JOB_ID", None)

    # ----- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self._spawn(
            [
                _find("munged"),
                "-F",
                "-f",
                f"--key-file={key}",
                f"--socket={self.socket}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
            "munged",
        )
        self._wait_for(lambda: self.socket.exists(), timeout, "munged socket")
        ctl_port, *node_ports = _free_ports(1 + len(NODES))
        self.conf.write_text(self._slurm_conf(ctl_port, node_ports))
        self._spawn([_find("slurmctld"), "-D", "-c", "-i", "-f", str(self.conf)], "slurmctld")
        for name in NODES:
            self._spawn([_find("slurmd"), "-D", "-N", name, "-f", str(self.conf)], f"slurmd-{name}")
        self._wait_for(self._nodes_idle, timeout, "both nodes idle in sinfo")

    def stop(self) -> None:
        try:
            self.run(["scancel", "--full", "--signal=KILL", "--user=root"], check=False, timeout=15)
            self.run(["scancel", "--user=root"], check=False, timeout=15)
            self._wait_for(
                lambda: not self.run(["squeue", "-h"], check=False).stdout.strip(),
                20,
                "empty queue",
                fail=False,
            )
        except (subprocess.SubprocessError, OSError):
            pass
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for handle in self.logs:
            handle.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _spawn(self, argv: list, name: str) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "w")  # noqa: SIM115 - open while it runs
        self.logs.append(log)
        self.procs.append(
            subprocess.Popen(
                [str(a) for a in argv], stdout=log, stderr=log, env=self.env, start_new_session=True
            )
        )
        time.sleep(0.2)
        if self.procs[-1].poll() is not None:
            raise RuntimeError(f"{name} exited at start: {self.log_tail(name + '.stdout')}")

    def _nodes_idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout.split("\n")
        states = dict(line.split() for line in out if line.strip())
        return all(states.get(n) == "idle" for n in NODES)

    @staticmethod
    def _wait_for(cond, timeout: float, what: str, fail: bool = True) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond():
                    return True
            except (subprocess.SubprocessError, OSError, ValueError):
                pass
            time.sleep(0.2)
        if fail:
            raise TimeoutError(f"local Slurm: timed out after {timeout:.0f}s waiting for {what}")
        return False

    def _slurm_conf(self, ctl_port: int, node_ports: list[int]) -> str:
        r = self.root
        lines = [
            "ClusterName=sfttest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={ctl_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/builtin",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "JobRequeue=1",
            "MinJobAge=600",
            "KillWait=10",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "JobAcctGatherType=jobacct_gather/none",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n",
            f"SlurmctldPidFile={r / 'state' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'state'}/slurmd-%n.pid",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log'}/slurmd-%n.log",
        ]
        for name, port in zip(NODES, node_ports):
            lines.append(
                f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} "
                "CPUs=1 RealMemory=1000 State=UNKNOWN"
            )
        lines.append(
            f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP"
        )
        return "\n".join(lines) + "\n"

    # ----- client helpers --------------------------------------------------------------------
    def run(
        self, argv: list[str], check: bool = True, timeout: float = 30, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
            check=check,
            cwd=PROJECT_ROOT,
        )

    def sbatch(
        self, args: list[str], env: dict | None = None, timeout: float = 30, wait: bool = False
    ) -> subprocess.CompletedProcess:
        """Submit with `sbatch --parsable` (and `--wait` if asked); returns the finished command."""
        argv = ["sbatch", "--parsable", *(["--wait"] if wait else []), *args]
        return self.run(argv, check=False, timeout=timeout, env=env)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict (JobState, Reason, ExitCode, Restarts, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", job_id], check=False).stdout
        fields = {}
        for token in out.split():
            key, sep, value = token.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def wait_state(
        self, job_id: str, states: tuple[str, ...], timeout: float, reason: str | None = None
    ) -> dict[str, str]:
        found: dict[str, str] = {}

        def reached() -> bool:
            found.update(self.job(job_id))
            return found.get("JobState") in states and (
                reason is None or found.get("Reason") == reason
            )

        self._wait_for(
            reached,
            timeout,
            f"job {job_id} in {states} (last: {found.get('JobState')} {found.get('Reason')})",
        )
        return found

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.root / "log" / name
        return path.read_text(errors="replace")[-chars:] if path.exists() else f"<no {name}>"


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "a local Slurm cluster needs Linux"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged as a local cluster needs root"
    missing = [b for b in DAEMONS + CLIENTS if _find(b) is None]
    if missing:
        return f"Slurm/munge not installed ({', '.join(missing)} missing); install: {APT_COMMAND}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalSlurm]:
    """Start the private cluster once per session; skip (with the reason) where it cannot run."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path("/tmp") / f"sft-slurm-{uuid.uuid4().hex[:10]}"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    cluster = LocalSlurm(root)
    try:
        cluster.start()
    except Exception as e:  # noqa: BLE001 - a broken start must not leave daemons behind
        logs = "\n".join(
            cluster.log_tail(n, 800) for n in ("slurmctld.log", "slurmd-n1.log", "munged.log")
        )
        cluster.stop()
        pytest.fail(f"could not start the local Slurm cluster: {e}\n{logs}")
    yield cluster
    cluster.stop()
