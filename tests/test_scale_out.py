"""Scaling the benchmark out: Ray tasks, shards, printed commands, GPU pinning, runners that
share a folder. Ray runs for real: a local instance of this test module (loopback only, no
dashboard, 2 CPUs), stopped at the end."""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agents.benchmark import claims, launcher, local_launcher, main, run_benchmark
from agents.benchmark.attempt import Running
from agents.benchmark.cells import make_request
from agents.runs.result import TIMING_FIELDS as RESULT_TIMING_FIELDS
from tying_env.errors import SettingError
from tying_env.presets import make_config

ROOT = Path(__file__).resolve().parents[1]
TINY = "LayerTying-GPT2-Tiny-v0"
# 4 sweeps of 3 decisions: a checkpoint at decision 10 (the cells' default), then 2 more
ENV = {"n_layer": 4, "max_sweeps": 4, "eval_batches": 1, "n_embd": 32, "n_head": 2}
QUICK = {**ENV, "max_sweeps": 1}  # no checkpoint: for the tests that need none
AGENTS, SEEDS = "qlearning,albert", "0,1"
CELLS = ["albert-s0", "albert-s1", "qlearning-s0", "qlearning-s1"]
STARTS = re.compile(r"benchmark: (\S+) (starts|resumes) on \S+, process (\d+)")


def args(out: Path, cache_dir: Path, *extra: str, env: dict | None = None,
         agents: str = AGENTS, seeds: str = SEEDS) -> list[str]:
    return ["--env", TINY, "--env-kwargs", json.dumps(ENV if env is None else env),
            "--agents", agents, "--seeds", seeds, "--threads", "1", "--out", str(out),
            "--cache-dir", str(cache_dir), "--no-progress", *extra]


def command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "agents.benchmark", *argv]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def stop_process(proc: subprocess.Popen) -> None:
    """End a benchmark that is still running (a failed test): SIGTERM first, so that it
    stops its cells and the Ray instance it started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def results_of(out: Path) -> dict[str, dict[str, Any]]:
    """Each cell's result.json without its timing fields."""
    found = {}
    for path in sorted((out / "cells").glob("*/result.json")):
        result = json.loads(path.read_text())
        found[path.parent.name] = {k: v for k, v in result.items()
                                   if k not in RESULT_TIMING_FIELDS}
    return found


def log_of(folder: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in ("wall_s", "timestamp")}
            for line in lines]


def attempts(folder: Path) -> list[tuple[str, int]]:
    """("starts" or "resumes", process id) of every attempt at a cell, in order."""
    text = (folder / "stderr.txt").read_text()
    return [(m.group(2), int(m.group(3))) for m in STARTS.finditer(text)]


@pytest.fixture(scope="module")
def ray_instance():
    """A real local Ray instance for this module: 127.0.0.1 only, no dashboard, 2 CPUs."""
    from agents.benchmark import ray_launcher

    ray = ray_launcher.import_ray(local=True)
    assert not ray.is_initialized()
    ray_launcher.start_local(num_cpus=2)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]
        assert ray.cluster_resources()["CPU"] == 2
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, cache_dir) -> Path:
    """The reference: the 4 cells with the local launcher, 2 worker processes."""
    out = tmp_path_factory.mktemp("local")
    assert main(args(out, cache_dir, "--workers", "2")) == 0
    return out


def kill_when_checkpointed(folder: Path, done: threading.Event, killed: list[int]) -> None:
    """Kill the process running the cell in `folder` (a Ray worker) right after its first
    checkpoint, before it finishes."""
    while not done.is_set():
        result = folder / "result.json"
        if (folder / "checkpoint" / "manifest.json").is_file() and not result.exists():
            tries = attempts(folder)
            if tries:
                os.kill(tries[-1][1], signal.SIGKILL)
                killed.append(tries[-1][1])
                return
        time.sleep(0.02)


@pytest.fixture(scope="module")
def ray_shards(tmp_path_factory, cache_dir, ray_instance) -> dict[str, Any]:
    """The same 4 cells on Ray, as two shards at once: 0/2 from a second process that
    starts (and stops) a Ray instance of its own, 1/2 from this process on the module's
    instance, whose Ray worker running qlearning-s1 is killed after the cell's
    checkpoint. Then a plain run gathers them."""
    out = tmp_path_factory.mktemp("ray")
    other = subprocess.Popen(command(*args(out, cache_dir, "--launcher", "ray", "--shard", "0/2")),
                             cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    done, killed = threading.Event(), []
    killer = threading.Thread(target=kill_when_checkpointed,
                              args=(out / "cells" / "qlearning-s1", done, killed))
    killer.start()
    try:
        mine = run_benchmark(TINY, ENV, AGENTS, SEEDS, None, out, cache_dir=cache_dir,
                             threads=1, progress=False, launcher="ray", shard="1/2")
        stdout, stderr = other.communicate(timeout=600)
    finally:
        done.set()
        killer.join()
        stop_process(other)
    assert other.returncode == 0, stderr
    shard_reports = sorted(p.name for p in out.iterdir() if p.is_file())
    gathered = run_benchmark(TINY, ENV, AGENTS, SEEDS, 1, out, cache_dir=cache_dir,
                             threads=1, progress=False)
    return {"out": out, "mine": mine, "other": stdout, "killed": killed,
            "shard_reports": shard_reports, "gathered": gathered}


# ---------------------------------------------------------------- the same cells, anywhere
def test_ray_cells_equal_local_cells(local_run, ray_shards):
    local, ray = results_of(local_run), results_of(ray_shards["out"])
    assert sorted(local) == sorted(ray) == CELLS
    for name in CELLS:
        assert ray[name] == local[name], name
        assert log_of(ray_shards["out"] / "cells" / name) == log_of(local_run / "cells" / name)
    assert json.loads((local_run / "results.json").read_text())["run"]["launcher"] == "local"


def test_a_killed_ray_worker_is_retried_from_the_checkpoint(local_run, ray_shards):
    folder = ray_shards["out"] / "cells" / "qlearning-s1"
    tries = attempts(folder)
    assert len(ray_shards["killed"]) == 1, "the worker was not killed mid-cell"
    assert tries[0] == ("starts", ray_shards["killed"][0])
    assert len(tries) == 2 and tries[1][0] == "resumes" and tries[1][1] != tries[0][1]
    assert "resuming" in (folder / "stderr.txt").read_text()
    assert ray_shards["mine"]["run"]["failed"] == []
    assert results_of(ray_shards["out"])["qlearning-s1"] == results_of(local_run)["qlearning-s1"]
    # the cells that were not killed ran once
    for name in ("qlearning-s0", "albert-s0", "albert-s1"):
        assert [kind for kind, _ in attempts(ray_shards["out"] / "cells" / name)] == ["starts"]


def test_two_shards_and_a_gathering_run_equal_one_run(local_run, ray_shards):
    mine, gathered = ray_shards["mine"], ray_shards["gathered"]
    assert mine["shard"] == [1, 2] and mine["cells"] == ["qlearning-s1", "albert-s1"]
    assert sorted(mine["run"]["ran"]) == ["albert-s1", "qlearning-s1"]
    assert mine["counts"]["finished"] == 2
    assert "shard 0/2: 2 of 2 cells finished (2 run now, 0 skipped), 0 failed" in \
        ray_shards["other"]
    assert ray_shards["shard_reports"] == []  # shards write no report: the gathering run does
    assert gathered["run"]["ran"] == [] and sorted(gathered["run"]["skipped"]) == CELLS
    assert gathered["counts"] == {"finished": 4, "failed": 0, "incomplete": 0, "missing": 0}
    reference = json.loads((local_run / "results.json").read_text())
    assert gathered["counts"] == reference["counts"]
    assert gathered["optimal"] == reference["optimal"]
    for key in ("env_id", "env_kwargs", "env_config", "agents", "seeds", "agent_kwargs"):
        assert gathered["request"][key] == reference["request"][key], key
    assert results_of(ray_shards["out"]) == results_of(local_run)


def test_printed_commands_are_one_self_contained_command_per_cell(ray_shards, cache_dir,
                                                                   capsys):
    out = ray_shards["out"]
    before = sorted(str(p) for p in out.rglob("*"))
    assert main(args(out, cache_dir, "--print-commands")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(str(p) for p in out.rglob("*")) == before  # nothing ran
    assert len(lines) == 4
    shards = []
    for line in lines:
        argv = shlex.split(line)
        assert argv[:3] == [sys.executable, "-m", "agents.benchmark"]
        assert argv[argv.index("--out") + 1] == str(out)
        assert json.loads(argv[argv.index("--env-kwargs") + 1]) == ENV
        shards.append(argv[argv.index("--shard") + 1])
    assert shards == ["0/4", "1/4", "2/4", "3/4"]
    assert launcher.shard_cells([tuple(c.rsplit("-s", 1)) for c in CELLS], (2, 4)) == \
        [("qlearning", "0")]
    # a printed command runs its one cell (finished here: skipped) and writes no report
    results_md = (out / "results.md").read_text()
    assert main(shlex.split(lines[2])[3:]) == 0
    assert "shard 2/4: 1 of 1 cells finished (0 run now, 1 skipped)" in capsys.readouterr().out
    assert (out / "results.md").read_text() == results_md
    # with --shard, only that shard's commands
    assert main(args(out, cache_dir, "--print-commands", "--shard", "1/2")) == 0
    assert [shlex.split(c)[-2] for c in capsys.readouterr().out.splitlines()] == ["1/4", "3/4"]


def test_past_its_retries_a_cell_is_reported_failed_and_the_others_go_on(
        tmp_path, cache_dir, ray_instance, monkeypatch):
    from agents.benchmark import ray_launcher

    monkeypatch.setattr(ray_launcher, "RAY_RETRIES", 0)
    out = tmp_path / "bench"
    victim = out / "cells" / "random-s0"

    def kill_at_start(done: threading.Event) -> None:
        while not done.is_set():
            if (victim / "stderr.txt").is_file() and attempts(victim):
                os.kill(attempts(victim)[0][1], signal.SIGKILL)
                return
            time.sleep(0.02)

    done = threading.Event()
    killer = threading.Thread(target=kill_at_start, args=(done,))
    killer.start()
    try:
        results = run_benchmark(TINY, QUICK, "random", "0,1", None, out, cache_dir=cache_dir,
                                progress=False, launcher="ray")
    finally:
        done.set()
        killer.join()
    assert results["run"]["failed"] == ["random-s0"]
    assert {c["name"]: c["status"] for c in results["cells"]} == {
        "random-s0": "failed", "random-s1": "finished"}
    failure = json.loads((victim / "failure.json").read_text())
    assert failure["returncode"] is None and "WorkerCrashedError" in failure["reason"]
    assert claims.read_claim(victim) is None


def test_sigterm_stops_the_runner_as_ctrl_c_does():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(launcher.Terminated), launcher._stop_signals_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    assert signal.getsignal(signal.SIGTERM) is previous


# ---------------------------------------------------------------- runners sharing a folder
def watch_folders(cells: Path, stop: threading.Event, seen: dict[str, int],
                  lost: list[str]) -> None:
    """Record each cell folder's inode; note any folder that disappears or is replaced."""
    while not stop.is_set():
        for name, inode in list(seen.items()):
            try:
                if (cells / name).stat().st_ino != inode:
                    lost.append(f"{name} replaced")
            except FileNotFoundError:
                lost.append(f"{name} deleted")
        for folder in cells.glob("*") if cells.is_dir() else []:
            seen.setdefault(folder.name, folder.stat().st_ino)
        time.sleep(0.01)


def test_two_invocations_on_overlapping_cells_run_each_cell_once(tmp_path, cache_dir,
                                                                  ray_instance):
    """A Ray run (joining the module's Ray instance with --ray-address) and a local run,
    started together on the same cells in opposite orders: each cell runs once, no folder
    is deleted, and both end with every cell's result."""
    out = tmp_path / "shared"
    first = command(*args(out, cache_dir, "--launcher", "ray", "--ray-address", ray_instance,
                          "--workers", "1", env=QUICK, agents="random,albert", seeds="0"))
    second = command(*args(out, cache_dir, env=QUICK, agents="albert,random", seeds="0"))
    stop, seen, lost = threading.Event(), {}, []
    watcher = threading.Thread(target=watch_folders, args=(out / "cells", stop, seen, lost))
    watcher.start()
    procs = [subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv in (first, second)]
    try:
        outputs = [proc.communicate(timeout=600) for proc in procs]
    finally:
        stop.set()
        watcher.join()
        for proc in procs:
            stop_process(proc)
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert "2 of 2 cells finished" in stdout and "0 failed" in stdout
    assert lost == [] and sorted(seen) == ["albert-s0", "random-s0"]
    ran = [re.search(r"\((\d) run now", stdout).group(1) for stdout, _ in outputs]
    assert sum(map(int, ran)) == 2  # between them, every cell ran once
    for name in seen:
        assert [kind for kind, _ in attempts(out / "cells" / name)] == ["starts"], name
        assert len((out / "cells" / name / "stdout.txt").read_text().splitlines()) == 1
        assert claims.read_claim(out / "cells" / name) is None  # released
    results = json.loads((out / "results.json").read_text())
    assert results["counts"]["finished"] == 2


def test_a_dead_runners_claim_is_taken_over_and_its_cell_resumed(tmp_path, cache_dir,
                                                                  local_run, capsys):
    """What a runner killed after its cell's checkpoint leaves: the cell's folder with the
    checkpoint and no result, and the runner's claim, whose process is gone."""
    out = tmp_path / "bench"
    folder = out / "cells" / "qlearning-s0"
    shutil.copytree(local_run / "cells" / "qlearning-s0", folder)
    (folder / "result.json").unlink()
    runner = subprocess.Popen([sys.executable, "-c", "pass"])
    runner.wait()
    now = time.time()
    (folder / claims.CLAIM).write_text(json.dumps({
        "owner": "dead-runner", "host": socket.gethostname(), "pid": runner.pid,
        "started": now, "heartbeat": now}))

    assert main(args(out, cache_dir, agents="qlearning", seeds="0")) == 0
    err = capsys.readouterr().err
    assert f"taking over qlearning-s0 from a stale claim (process {runner.pid}" in err
    assert [kind for kind, _ in attempts(folder)] == ["starts", "resumes"]
    assert "resuming" in (folder / "stderr.txt").read_text()
    assert results_of(out) == {"qlearning-s0": results_of(local_run)["qlearning-s0"]}
    assert log_of(folder) == log_of(local_run / "cells" / "qlearning-s0")
    assert claims.read_claim(folder) is None


# ---------------------------------------------------------------- GPUs
class FakeProcess:
    def __init__(self, target, name, args):
        self.name, self.args, self.started = name, args, False

    def start(self):
        self.started = True


class FakeContext:
    Process = FakeProcess


def test_gpus_pin_worker_slots_round_robin(tmp_path, cache_dir, monkeypatch):
    request = make_request(TINY, QUICK, "vanilla", "0,1,2,3", 3, tmp_path, cache_dir=cache_dir,
                           threads=1)
    pool = local_launcher.LocalPool(request, (1, 0))
    pool.ctx = FakeContext()
    claim = claims.Claim(tmp_path, claims.ClaimInfo("me", "host", 1, 0.0, 0.0))
    cells = [Running("vanilla", s, claim, 0.0) for s in range(4)]
    assert [pool.start(c) for c in cells[:3]] == [
        "1 thread(s), GPU 1", "1 thread(s), GPU 0", "1 thread(s), GPU 1"]
    assert [c.handle.args[-1] for c in cells[:3]] == ["1", "0", "1"]
    assert not pool.has_room()
    pool.running.remove(cells[1])  # slot 1 frees up: the next cell gets its GPU
    assert pool.start(cells[3]) == "1 thread(s), GPU 0" and cells[3].slot == 1
    # indices are of the GPUs this process sees
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert local_launcher.cuda_visible(1) == "6" and local_launcher.cuda_visible(0) == "4"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local_launcher.cuda_visible(3) == "3"


def test_device_accepts_cuda_n(monkeypatch):
    import torch

    with pytest.raises(SettingError, match=r"device='cuda:x' is unknown; allowed: auto, cpu, "
                                           r"cuda, cuda:N"):
        make_config(device="cuda:x")
    with pytest.raises(SettingError, match="device='gpu' is unknown"):
        make_config(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(SettingError, match="device='cuda:0' is not available"):
            make_config(device="cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert make_config(device="cuda:1").device == "cuda:1"
    with pytest.raises(SettingError, match="'cuda:0' to 'cuda:1'") as error:
        make_config(device="cuda:2")
    assert error.value.argument == "device"


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(("extra", "option", "words"), [
    (["--shard", "3/2"], "--shard", ["'3/2'", "0 <= i < n"]),
    (["--shard", "2/2"], "--shard", ["'2/2'", "0 <= i < n"]),
    (["--shard=-1/2"], "--shard", ["'-1/2'"]),
    (["--shard", "1/0"], "--shard", ["'1/0'", "n >= 1"]),
    (["--shard", "half"], "--shard", ["'half'", "e.g. 0/4"]),
    (["--shard", "x", "--print-commands"], "--shard", ["'x'"]),
    (["--gpus", "0,a"], "--gpus", ["'a'", "GPU index"]),
    (["--gpus=-1"], "--gpus", ["'-1'"]),
    (["--gpus", "0,0"], "--gpus", ["GPU 0 given more than once"]),
    (["--gpus", "7"], "--gpus", ["GPU 7", "not here"]),
    (["--gpus", "0", "--launcher", "ray"], "--gpus", ["drop --gpus"]),
    (["--gpus", "0", "--env-kwargs", json.dumps({**QUICK, "device": "cpu"})], "--gpus",
     ["'cpu'"]),
    (["--launcher", "slurm"], "--launcher", ["'slurm'", "local, ray"]),
    (["--ray-address", "auto"], "--ray-address", ["--launcher ray"]),
    (["--workers", "0", "--launcher", "ray"], "--workers", ["int >= 1"]),
])
def test_bad_scale_out_options_name_the_option(tmp_path, cache_dir, capsys, extra, option,
                                               words):
    with pytest.raises(SystemExit) as exit_info:
        main(args(tmp_path / "out", cache_dir, env=QUICK) + extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def test_without_ray_the_ray_launcher_says_how_to_install_it(tmp_path, cache_dir, capsys,
                                                             monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    with pytest.raises(SystemExit) as exit_info:
        main(args(tmp_path / "out", cache_dir, "--launcher", "ray", env=QUICK))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --launcher:" in err and "pip install 'layer-tying-gym[ray]'" in err
    assert not (tmp_path / "out" / "results.json").exists()
