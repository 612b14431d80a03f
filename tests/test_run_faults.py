"""Faults and mistakes around a run: taken folders, failed writes, stopping signals.

Each test checks the message a user sees (no traceback) and that no earlier result or
checkpoint changed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.runs.cli import main
from agents.runs.driver import run
from agents.runs.folder import FolderLock
from agents.runs.result import TIMING_FIELDS as RESULT_TIMING_FIELDS
from agents.runs.runlog import TIMING_KEYS
from agents.runs.spec import RunSpec
from tying_env import checkpoint as ckpt
from tying_env.errors import SettingError, WriteFailedError

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"n_layer": 4, "n_embd": 32, "n_head": 2, "eval_batches": 1, "max_sweeps": 1}


def argv(agent: str, out: Path, cache_dir: Path, *extra: str, **env_kwargs) -> list[str]:
    return ["--agent", agent, "--env-kwargs", json.dumps({**SMALL, **env_kwargs}),
            "--cache-dir", str(cache_dir), "--out", str(out), "--no-progress", *extra]


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (but its lock), by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir) -> Path:
    """A finished run of `vanilla`."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(argv("vanilla", out, cache_dir)) == 0
    return out


# ------------------------------------------------------------ taken folders
def test_a_finished_run_is_not_overwritten(finished, cache_dir, capsys):
    before = snapshot(finished)
    with pytest.raises(SystemExit) as exc:
        main(argv("albert", finished, cache_dir))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out" in err and str(finished) in err and "finished run" in err
    assert "'vanilla'" in err and "--resume" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert snapshot(finished) == before


def test_the_python_api_raises_a_setting_error_naming_out(finished, cache_dir):
    before = snapshot(finished)
    with pytest.raises(SettingError) as error:
        run(RunSpec(agent="albert", env_kwargs=SMALL, out=finished, cache_dir=cache_dir,
                    progress=False))
    assert error.value.argument == "out" and "finished run" in str(error.value)
    assert snapshot(finished) == before


def test_a_stopped_run_is_not_overwritten(tmp_path, cache_dir, capsys):
    out = tmp_path / "stopped"
    assert main(argv("random", out, cache_dir, "--checkpoint-every", "1", max_sweeps=2)) == 0
    (out / "result.json").unlink()  # as if it had been killed before the end
    before = snapshot(out)
    with pytest.raises(SystemExit) as exc:
        main(argv("random", out, cache_dir))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "stopped run" in err and f"--resume {out}" in err
    assert snapshot(out) == before


def test_overwrite_moves_the_old_run_aside(tmp_path, finished, cache_dir, capsys):
    out = tmp_path / "run"
    (tmp_path / "run").mkdir()
    for path in finished.rglob("*"):  # a copy of the finished run, to keep the fixture
        if path.is_file():
            target = out / path.relative_to(finished)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    before = snapshot(out)
    assert main(argv("albert", out, cache_dir, "--overwrite")) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before  # kept, byte for byte
    assert json.loads((out / "result.json").read_text())["agent"] == "albert"


def test_a_running_run_holds_its_folder(tmp_path, cache_dir, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    lock = FolderLock(out)
    assert lock.acquire()  # as a running train_agent.py would
    try:
        with pytest.raises(SystemExit) as exc:
            main(argv("vanilla", out, cache_dir))
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "being written by a running run" in err and f"process {os.getpid()}" in err
    finally:
        lock.release()
    assert not (out / "run.json").exists()
    assert main(argv("vanilla", out, cache_dir)) == 0  # free again


def test_overwrite_and_resume_do_not_mix(finished, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(finished), "--overwrite"])
    assert exc.value.code == 2
    assert "argument --overwrite" in capsys.readouterr().err


# ------------------------------------------------------------ failed writes
def test_out_under_a_file_is_a_clean_error(tmp_path, cache_dir, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(argv("vanilla", blocker / "run", cache_dir)) == 1
    err = capsys.readouterr().err
    assert f"cannot write {blocker / 'run'}" in err and "is a file, not a folder" in err
    assert "Traceback" not in err
    with pytest.raises(WriteFailedError) as error:  # the API: a typed exception
        run(RunSpec(agent="vanilla", env_kwargs=SMALL, out=blocker / "run", cache_dir=cache_dir))
    assert error.value.path == str(blocker / "run")


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's /sys")
def test_a_read_only_location_is_a_clean_error(cache_dir, capsys):
    out = Path("/sys/layer-tying-gym-test")
    assert main(argv("vanilla", out, cache_dir)) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}" in err and "Traceback" not in err


def result_without_timing(folder: Path) -> dict:
    result = json.loads((folder / "result.json").read_text())
    return {k: v for k, v in result.items() if k not in (*RESULT_TIMING_FIELDS, "files")}


def log_without_timing(folder: Path) -> list[dict]:
    lines = (folder / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
            for line in lines]


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one(tmp_path, cache_dir, capsys,
                                                        monkeypatch):
    """The second checkpoint hits a full disk: a clean error, the first checkpoint intact,
    and --resume then ends exactly as an uninterrupted run."""
    reference = tmp_path / "reference"
    assert main(argv("qlearning", reference, cache_dir, max_sweeps=2)) == 0
    capsys.readouterr()

    out = tmp_path / "full"
    real_write_bytes = Path.write_bytes
    checkpoints = {"files": 0}

    def write_bytes(self: Path, data: bytes) -> int:
        if ckpt.TMP_PREFIX in str(self.parent.name):
            checkpoints["files"] += 1
            if checkpoints["files"] > 9:  # the first checkpoint: 8 part files + manifest
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_bytes", write_bytes)
        assert main(argv("qlearning", out, cache_dir, "--checkpoint-every", "1",
                         max_sweeps=2)) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "a checkpoint of this run needs about" in err
    assert "MiB" in err and f"--resume {out}" in err and "Traceback" not in err
    parts = ckpt.read_checkpoint(out)  # the first checkpoint: still complete and valid
    assert parts["state"][1]["decision"] == 1
    assert not list(out.glob(ckpt.TMP_PREFIX + "*"))  # nothing half-written left

    assert main(["--resume", str(out), "--no-progress"]) == 0
    assert result_without_timing(out) == result_without_timing(reference)
    assert log_without_timing(out) == log_without_timing(reference)


# ------------------------------------------------------------ stopping signals
def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}


def train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train_agent.py"), *args],
                            cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_lines(log: Path, n: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_bytes().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{log} did not reach {n} lines (exit {process.poll()})")


@pytest.mark.parametrize(("agent", "agent_kwargs", "signum"), [
    ("qlearning", {}, signal.SIGTERM),
    # an SB3 agent's checkpoints (27 s): slow; test_resume resumes maskable-ppo exactly too
    pytest.param("maskable-ppo", {"n_steps": 2, "batch_size": 2}, signal.SIGTERM,
                 marks=pytest.mark.slow),
    ("qlearning", {}, signal.SIGINT),
])
def test_a_signal_checkpoints_and_resume_ends_as_uninterrupted(tmp_path, cache_dir, agent,
                                                               agent_kwargs, signum):
    extra = ["--checkpoint-every", "0"]  # no periodic checkpoints: the signal makes one
    if agent_kwargs:
        extra += ["--agent-kwargs", json.dumps(agent_kwargs)]
    reference = train(argv(agent, tmp_path / "reference", cache_dir, *extra, max_sweeps=4))
    out = tmp_path / "stopped"
    stopped = train(argv(agent, out, cache_dir, *extra, max_sweeps=4))
    wait_for_lines(out / "log.jsonl", 2, stopped)
    stopped.send_signal(signum)
    _, err = stopped.communicate(timeout=300)
    assert stopped.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    assert f"stopped by {name}" in err and f"--resume {out}" in err and "Traceback" not in err
    decision = ckpt.read_checkpoint(out)["state"][1]["decision"]
    assert 2 <= decision < 12 and not (out / "result.json").exists()

    resumed = train(["--resume", str(out), "--no-progress"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert reference.wait(timeout=300) == 0
    assert result_without_timing(out) == result_without_timing(tmp_path / "reference")
    assert log_without_timing(out) == log_without_timing(tmp_path / "reference")


def test_an_interrupted_benchmark_resumes_its_stopped_cells(tmp_path, cache_dir):
    """Ctrl-C on the benchmark: its running cell writes a checkpoint; the same command
    then resumes that cell, which ends as an uninterrupted run of the same spec. The first
    runner starts with SIGINT ignored, as a background job of a script starts: it stops on
    SIGINT all the same."""
    env_kwargs = json.dumps({**SMALL, "max_sweeps": 4})
    ignoring = [sys.executable, "-c", "import os, signal, sys; "
                "signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"]
    bench = [sys.executable, "-m", "agents.benchmark", "--env-kwargs", env_kwargs,
             "--agents", "qlearning", "--seeds", "0", "--threads", "1", "--out",
             str(tmp_path / "bench"), "--cache-dir", str(cache_dir), "--no-progress"]
    reference = train(argv("qlearning", tmp_path / "reference", cache_dir, max_sweeps=4))
    first = subprocess.Popen([*ignoring, *bench[1:]], cwd=ROOT, env=subprocess_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cell = tmp_path / "bench" / "cells" / "qlearning-s0"
    wait_for_lines(cell / "log.jsonl", 2, first)
    first.send_signal(signal.SIGINT)  # the launcher only: it stops its cells with SIGTERM
    _, err = first.communicate(timeout=300)
    assert first.returncode == 130, err
    assert "running ones wrote a checkpoint" in err
    assert ckpt.find_checkpoint(cell) is not None and not (cell / "result.json").exists()

    second = subprocess.run(bench, cwd=ROOT, env=subprocess_env(), capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "resuming" in (cell / "stderr.txt").read_text()
    assert reference.wait(timeout=300) == 0
    assert result_without_timing(cell) == result_without_timing(tmp_path / "reference")
    assert log_without_timing(cell) == log_without_timing(tmp_path / "reference")
