"""Several `tunewire-server` replicas on 127.0.0.1 sharing one PostgreSQL (the `store` setting) and one data
folder, as pods sharing a ReadWriteMany volume would: for the fault tests (tests/robust/test_replicas.py) and
the figures (bench/replicas.py).

`Cluster.start` starts the first replica alone (it creates the shared folder's checkpoint key), then the
others; `Cluster.owner` asks PostgreSQL which replica holds a job's lease. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.server_process import ServerProcess


@dataclass
class Replica:
    """One server process of the cluster; `start()` again runs it again under the same replica id."""

    name: str
    data: Path
    models_root: Path
    url: str
    lease_s: float = 3.0
    heartbeat_s: float = 0.5
    event_poll_s: float = 1.0
    env: dict | None = None
    threads: int | None = 1
    args: tuple[str, ...] = ()  # more server flags
    process: ServerProcess | None = None

    def start(self, timeout: float = 60) -> Replica:
        self.process = ServerProcess(
            self.data, self.models_root, "--store", self.url, "--replica-id", self.name,
            "--lease-s", str(self.lease_s), "--heartbeat-s", str(self.heartbeat_s),
            "--event-poll-s", str(self.event_poll_s), *self.args, threads=self.threads, env=self.env,
            log_path=self.data / f"{self.name}.log",
        ).start(timeout)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.proc is not None and self.process.proc.poll() is None

    @property
    def address(self) -> str:
        assert self.process is not None
        return self.process.address

    def client(self, timeout: float = 30):
        import tunewire

        return tunewire.Client(self.address, timeout=timeout)

    def log(self) -> str:
        path = self.data / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Cluster:
    """`n` replicas named r1..rn on one store URL and one data folder."""

    url: str
    data: Path
    models_root: Path
    n: int = 3
    lease_s: float = 3.0
    heartbeat_s: float = 0.5
    event_poll_s: float = 1.0
    env: dict | None = None
    threads: int | None = 1
    args: tuple[str, ...] = ()  # more server flags, for every replica
    replicas: list[Replica] = field(default_factory=list)

    def start(self, timeout: float = 60) -> Cluster:
        """Start every replica (r1 first and alone); on failure stop those started and raise."""
        self.replicas = [Replica(f"r{i}", self.data, self.models_root, self.url, self.lease_s, self.heartbeat_s,
                                 self.event_poll_s, self.env, self.threads, self.args)
                         for i in range(1, self.n + 1)]
        try:
            for replica in self.replicas:
                replica.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def by_name(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def others(self, name: str) -> list[Replica]:
        return [r for r in self.replicas if r.name != name]

    def owner(self, job_id: str) -> str | None:
        """The replica holding the job's lease (None while queued or ended)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SELECT lease_owner FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return row[0] if row else None

    def worker_starts(self, job_id: str) -> dict[str, int]:
        """How many times each replica handed the job to a worker (its log's `worker assigned` lines), for
        the replicas that did."""
        pattern = rf"worker assigned.*{job_id}|{job_id}.*worker assigned"
        counts = {r.name: len(re.findall(pattern, r.log())) for r in self.replicas}
        return {name: n for name, n in counts.items() if n}
