"""A real multi-node Ray cluster on one machine (a head and two worker raylets, on loopback addresses, with
the token authentication the pinned Ray needs): losing either worker node mid-sweep loses no run and ends
no sweep (issue 28: with the mailbox actor on the lost node, the sweep crashed with ActorUnavailableError).
Marked `ray`; skipped without Ray."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import wait_until, write_grid

pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_ray_test_at_a_time")]

RAY = str(Path(sys.executable).with_name("ray"))


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class Cluster:
    """`ray start` a head (no CPUs: it hosts the driver, as a head node does) and two worker nodes of one CPU
    each, at 127.0.0.2 and 127.0.0.3, in a temporary folder of their own; stopped by killing exactly those
    processes (`ray stop` would also stop the other tests' cluster)."""

    def __init__(self) -> None:
        # A short folder: Ray's socket paths must stay under 108 characters.
        self.temp = tempfile.mkdtemp(prefix="mr", dir="/tmp")
        self.port = 20000 + secrets.randbelow(20000)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_DISABLE_USAGE_STATS": "1",
                    # The head notices a dead node within about a second instead of Ray's default 15-30 s:
                    # the test waits on that event, and a shorter wait is a shorter test.
                    "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
                    "RAY_health_check_failure_threshold": "2"}
        self.address = f"127.0.0.1:{self.port}"
        self._start("--head", "--num-cpus", "0", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                    "--include-dashboard=false", "--temp-dir", self.temp)
        for ip in ("127.0.0.2", "127.0.0.3"):
            self._start("--address", self.address, "--num-cpus", "1", "--node-ip-address", ip)

    def _start(self, *args: str) -> None:
        done = subprocess.run([RAY, "start", "--disable-usage-stats", *args], capture_output=True, text=True,
                              env=self.env)
        assert done.returncode == 0, done.stdout + done.stderr

    def raylet(self, ip: str) -> int:
        """The pid of the raylet of the node at `ip`."""
        pids = [p for p in _pids(f"raylet.*{self.temp}") if f"--node_ip_address={ip}" in _cmdline(p)]
        assert len(pids) == 1, pids
        return pids[0]

    def stop(self) -> None:
        for pid in _pids(self.temp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


@pytest.fixture
def cluster():
    c = Cluster()
    yield c
    c.stop()


@pytest.mark.parametrize("victim", ["127.0.0.2", "127.0.0.3"])
def test_losing_a_worker_node_mid_sweep_loses_no_run(cluster, tmp_path, victim):
    """Eight runs of a few seconds on two one-CPU nodes; once the first is stored, one node's raylet is
    killed with SIGKILL. Its tasks are retried on the other node, and the sweep stores all eight, each once."""
    grid = write_grid(tmp_path, name="nodes.toml")
    grid.write_text(grid.read_text().replace("tokens = [2048]", "tokens = [32768]"))
    store = tmp_path / "store"
    driver = subprocess.Popen([sys.executable, "-m", "mupcheck", "run", str(grid), "--backend", "ray",
                               "--ray-address", cluster.address, "--store", str(store), "--no-progress"],
                              env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = store / "runs"
    assert wait_until(lambda: runs.is_dir() and any(runs.glob("*.json")), alive=lambda: driver.poll() is None)
    os.kill(cluster.raylet(victim), signal.SIGKILL)
    out, err = driver.communicate()
    assert driver.returncode == 0, err
    assert "8/8 runs (8 trained, 0 reused" in out, out + err
    assert len(list(runs.glob("*.json"))) == 8 and not (store / "failures").exists()
    assert "ActorUnavailableError" not in err and "Traceback" not in err
