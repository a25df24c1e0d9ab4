"""The atlas on a real Ray cluster: a local head started here (2 CPUs), the CLI connected to it with --ray. Ray's
actors explain the shards (their processes, not the driver, are named in atlas.json), the tables equal those of a
run on one machine, and a worker killed mid-run costs only its shard."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_atlas import ROOT, atlas_command, pooled_folder, tables

pytest.importorskip("ray", reason="the Ray tests need lrp-widgets[ray]")

OPTIONS = ["--shard-size", "10", "--batch-size", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``ray start --head --block``: the head and its workers live as long as this process group."""
    port = free_port()
    ray = Path(sys.executable).with_name("ray")
    temp = Path("/tmp") / f"ray-{os.getpid()}"  # Ray's socket paths must be short
    head = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while subprocess.run([str(ray), "status", f"--address={address}"], capture_output=True).returncode != 0:
        assert head.poll() is None and time.monotonic() < deadline, head.stderr.read().decode()[-2000:]
        time.sleep(1)
    yield address
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return pooled_folder(tmp_path_factory.mktemp("ray") / "folder", 40)


@pytest.fixture(scope="module")
def local(folder, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("local") / "atlas"
    subprocess.run(atlas_command(folder, out, *OPTIONS, "--workers", "0"), cwd=ROOT, check=True, capture_output=True)
    return tables(out)


def run_on(cluster: str, folder: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(atlas_command(folder, out, *OPTIONS, "--ray", cluster), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_ray_workers_explain_the_shards_and_the_atlas_is_the_same(cluster, folder, local, tmp_path):
    run = run_on(cluster, folder, tmp_path / "atlas")
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    workers = json.loads((tmp_path / "atlas" / "atlas.json").read_text())["explained_by"]
    assert workers and all(int(who.rsplit(":", 1)[1]) != run.pid for who in workers), workers
    assert tables(tmp_path / "atlas") == local


def test_a_worker_lost_mid_run_costs_only_its_shard(cluster, folder, local, tmp_path):
    run = run_on(cluster, folder, tmp_path / "atlas")
    shards = tmp_path / "atlas" / ".shards"
    deadline = time.monotonic() + 300
    while not list(shards.glob("shard-*.pkl")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    actors = [int(line.split()[0]) for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True,
                                                              text=True).stdout.splitlines()
              if "ray::MapWorker(MapBatches(ShardActor))" in line]
    assert actors and run.poll() is None, "no actor to kill: the run ended before"
    os.kill(actors[0], signal.SIGKILL)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    assert tables(tmp_path / "atlas") == local
