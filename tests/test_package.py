"""The package as a user gets it: `python -m build` makes the sdist and, from the sdist,
the wheel; the wheel installs into a fresh virtual environment outside the repository,
and the environment and the `train-agent` command work from a folder outside it too.

Offline and fast: the build uses this environment's setuptools (`--no-isolation`), the
fresh environment gets the wheel alone (`--no-deps --no-index`) and sees the
dependencies installed here through a `.pth` file naming this environment's
site-packages. A path line of a `.pth` file adds that folder to `sys.path` without
reading the `.pth` files inside it, so the repository's editable install stays invisible
there; the tests assert that `tying_env` comes from the fresh environment.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.runs.result import RunResult

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tying_env", "agents")
DATA_SUFFIXES = (".yml", ".yaml", ".json")
# a data file in a folder without __init__.py, added to the copy: the package-data check
# covers that case too, and holds a file whatever data the repository has
PROBE = "agents/_package_data_probe/probe.yml"
# 3 decisions of 4 AdamW steps on a 4-layer model: seconds
SMALL = {"n_layer": 4, "n_embd": 32, "n_head": 2, "eval_batches": 1, "max_sweeps": 1}
TIMEOUT = 300


@dataclass(frozen=True)
class Built:
    src: Path
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Venv:
    root: Path
    python: Path
    bin: Path


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _outside_repository(path: Path) -> Path:
    assert ROOT not in path.resolve().parents, f"{path} lies inside the repository"
    return path


def _checkout_files() -> list[str]:
    """The files of the working tree that git does not ignore (a clone's, with edits)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"building the package copies a git checkout's files: {e}")
    return [n for n in listed.decode().split("\0") if n and (ROOT / n).is_file()]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The sdist and the wheel, built once into a temporary folder."""
    assert importlib.util.find_spec("build"), "needs PyPA build: pip install -e '.[dev]'"
    top = _outside_repository(tmp_path_factory.mktemp("package"))
    src = top / "src"
    for name in _checkout_files():  # a copy, so that the build writes nothing here
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    (src / PROBE).parent.mkdir()
    (src / PROBE).write_text("probe: true\n")
    # no --sdist/--wheel: the wheel is built from the unpacked sdist, so this proves the
    # sdist holds everything the wheel needs
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", top / "dist", src],
         cwd=top)
    (sdist,), (wheel,) = (top / "dist").glob("*.tar.gz"), (top / "dist").glob("*.whl")
    return Built(src, sdist, wheel)


@pytest.fixture(scope="session")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh virtual environment holding the wheel, and this one's dependencies."""
    root = _outside_repository(tmp_path_factory.mktemp("venv"))
    _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root)
    bin_dir = root / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", built.wheel], cwd=root)
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   cwd=root).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    (Path(purelib) / "dependencies-from-tests.pth").write_text("".join(f"{p}\n" for p in ours))
    return Venv(root, python, bin_dir)


def _clean_env(workdir: Path) -> dict[str, str]:
    """This process's environment without what would point Python at the repository."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "LAYER_TYING_CACHE": str(workdir / "cache")}


MAKE_AND_STEP = f"""
import importlib.metadata, json, math, sys
import gymnasium as gym
import agents, tying_env

env = gym.make("LayerTying-GPT2-Tiny-v0", **{SMALL!r})
obs, info = env.reset(seed=0)
obs, reward, terminated, truncated, info = env.step(0)
print(json.dumps({{
    "prefix": sys.prefix, "tying_env": tying_env.__file__, "agents": agents.__file__,
    "version": tying_env.__version__,
    "dist_version": importlib.metadata.version("layer-tying-gym"),
    "obs_ok": bool(env.observation_space.contains(obs)), "reward": float(reward),
    "ended": bool(terminated or truncated)}}))
"""


def test_installed_environment_makes_resets_and_steps(venv: Venv, built: Built, tmp_path: Path):
    workdir = _outside_repository(tmp_path)
    proc = _run([venv.python, "-c", MAKE_AND_STEP], cwd=workdir, env=_clean_env(workdir))
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["prefix"]) == venv.root
    for module in ("tying_env", "agents"):  # the wheel's copy, not the repository's
        assert venv.root in Path(got[module]).resolve().parents, (module, got[module])
    assert got["version"] == got["dist_version"] == built.wheel.name.split("-")[1]
    assert got["obs_ok"] and math.isfinite(got["reward"]) and not got["ended"]


def test_installed_train_agent_runs_the_main_job(venv: Venv, tmp_path: Path):
    workdir = _outside_repository(tmp_path)
    script = venv.bin / ("train-agent.exe" if os.name == "nt" else "train-agent")
    _run([script, "--agent", "qlearning", "--env", "LayerTying-GPT2-Tiny-v0",
          "--env-kwargs", json.dumps(SMALL), "--out", "quickstart", "--no-progress"],
         cwd=workdir, env=_clean_env(workdir))
    out = workdir / "quickstart"
    result = RunResult.from_json(json.loads((out / "result.json").read_text()))
    assert result.complete and result.all_decisions and not result.diverged
    assert result.agent == "qlearning" and result.env_id == "LayerTying-GPT2-Tiny-v0"
    assert result.decisions == SMALL["max_sweeps"] * (SMALL["n_layer"] - 1)
    assert result.final_val_ppl is not None and 1.0 < result.final_val_ppl < math.inf
    assert (out / "model" / "model.safetensors").is_file() and (out / "log.jsonl").is_file()


def _files(root: Path, suffixes: tuple[str, ...]) -> set[str]:
    return {p.relative_to(root).as_posix() for package in PACKAGES
            for p in (root / package).rglob("*") if p.suffix in suffixes}


def test_wheel_and_sdist_hold_the_code_and_its_data(built: Built):
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = wheel.read(entry_points).decode()
    data = _files(built.src, DATA_SUFFIXES)
    assert PROBE in data
    assert data <= names, f"data files missing from the wheel: {sorted(data - names)}"
    assert _files(built.src, (".py",)) <= names, "modules missing from the wheel"
    assert "train-agent = agents.runs.cli:main" in scripts
    assert not any(n.startswith(("tests/", "docs/", "train_agent.py")) for n in names)

    with tarfile.open(built.sdist) as sdist:
        top = built.sdist.name.removesuffix(".tar.gz")
        members = {n.removeprefix(f"{top}/") for n in sdist.getnames()}
    assert {"pyproject.toml", "README.md", "CHANGELOG.md", *data} <= members
    assert not any(n.startswith(("tests/", "docs/")) for n in members)  # MANIFEST.in
