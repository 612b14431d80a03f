"""The run's figures: written as PNGs of a sensible size, whatever the title or the run."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from agents.runs.plots import plain_log_ticks, plot_curves, plot_tie_map, wrap_title

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LONG_TITLE = ("recurrent-ppo on LayerTying-GPT2-Small-WikiText2-v0, seed 12345, agent kwargs "
              '{"n_steps": 16, "batch_size": 16, "ent_coef": 0.02}, '
              "runs/a-folder-name-without-any-space-that-goes-on-" + "and-on-" * 12 + "end")


def records(n_layer: int = 4, decisions: int = 6, seed: int = 0) -> list[dict[str, Any]]:
    """Lines like log.jsonl's (only the fields the figures read)."""
    rng = np.random.default_rng(seed)
    ties, out = list(range(n_layer)), []
    for d in range(1, decisions + 1):
        layer = 1 + (d - 1) % (n_layer - 1)
        ties[layer] = int(rng.integers(layer + 1))
        out.append(dict(decision=d, layer=layer, tie_map=list(ties),
                        reward=float(rng.normal(0, 0.1)),
                        val_ppl=20.0 * math.exp(-d / 40) + 5, train_steps=4 * d,
                        trainable_fraction=len(set(ties)) / n_layer, diverged=False))
    return out


def start_of(n_layer: int = 4) -> dict[str, Any]:
    return dict(decision=0, tie_map=[0] * n_layer, val_ppl=64.0, train_steps=0,
                trainable_fraction=1 / n_layer, diverged=False)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))  # something was drawn
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return width, height


def check_png(path: Path, max_height: int = 2600) -> None:
    width, height = png_size(path)
    assert 600 <= width <= 1800 and 250 <= height <= max_height, (path, width, height)


@pytest.mark.parametrize("title", [None, "tie map: qlearning on LayerTying-GPT2-Tiny-v0, seed 0",
                                   LONG_TITLE])
def test_tie_map_accepts_any_title(tmp_path, title):
    path = plot_tie_map(records(), tmp_path / "tie_map.png", start=start_of(), title=title)
    assert path == tmp_path / "tie_map.png"
    check_png(path)


@pytest.mark.parametrize("title", [None, "qlearning on LayerTying-GPT2-Tiny-v0, seed 0",
                                   LONG_TITLE])
def test_curves_accept_any_title(tmp_path, title):
    path = plot_curves(records(), tmp_path / "curves.png", start=start_of(), optimal_ppl=4.5,
                       final_val_ppl=23.5, title=title)
    check_png(path)


def test_long_title_makes_the_figure_taller_not_wider(tmp_path):
    short = png_size(plot_tie_map(records(), tmp_path / "a.png", title="short"))
    long = png_size(plot_tie_map(records(), tmp_path / "b.png", title=LONG_TITLE))
    assert long[0] == short[0] and long[1] > short[1]


def test_big_run_and_many_layers(tmp_path):
    many = records(n_layer=24, decisions=400)
    check_png(plot_tie_map(many, tmp_path / "tie_map.png", title=LONG_TITLE))
    check_png(plot_curves(many, tmp_path / "curves.png", title=LONG_TITLE))


def test_diverged_run_without_perplexities(tmp_path):
    lines = records(decisions=3)
    lines[-1].update(val_ppl=None, reward=0.0, diverged=True, terminated=True)
    check_png(plot_curves(lines, tmp_path / "curves.png", start=start_of(), optimal_ppl=4.5))
    nothing = [dict(r, val_ppl=None) for r in lines]
    check_png(plot_curves(nothing, tmp_path / "none.png"))


def test_no_records_is_an_error(tmp_path):
    with pytest.raises(ValueError):
        plot_tie_map([], tmp_path / "tie_map.png")
    with pytest.raises(ValueError):
        plot_curves([], tmp_path / "curves.png")
    assert not list(tmp_path.iterdir())


def test_wrap_title_keeps_every_character_and_fits_the_width():
    wrapped = wrap_title(LONG_TITLE, width_in=6.0, fontsize=11)
    lines = wrapped.splitlines()
    assert len(lines) > 1
    assert "".join(wrapped.split()) == "".join(LONG_TITLE.split())
    assert max(len(line) for line in lines) <= 6.0 * 72 / (0.5 * 11)


@pytest.mark.parametrize("low, high", [(7.0, 70.0), (13.8, 16.2), (3.0, 30_000.0)])
def test_log_axis_has_plain_number_labels(low, high):
    fig = Figure()
    ax = fig.subplots()
    ax.semilogy([0, 1], [low, high])
    plain_log_ticks(ax)
    fig.draw_without_rendering()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3, labels
    for label in labels:
        float(label.replace(",", ""))  # "20", "15.5", "10,000": no "2×10¹"


def test_the_plot_modules_leave_matplotlib_alone():
    """Importing and using the plot modules neither picks a backend nor loads pyplot: a
    notebook or a script keeps its own."""
    code = textwrap.dedent("""
        import sys, matplotlib
        backend = matplotlib.get_backend()
        import agents.runs.plots, agents.benchmark.plots
        records = [{"decision": d, "tie_map": [0, 0, d % 3]} for d in (1, 2, 3)]
        agents.runs.plots.plot_tie_map(records, sys.argv[1])
        assert matplotlib.get_backend() == backend, (backend, matplotlib.get_backend())
        assert "matplotlib.pyplot" not in sys.modules
    """)
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.run([sys.executable, "-c", code, str(Path(folder) / "t.png")],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "MPLBACKEND": "svg"})
    assert proc.returncode == 0, proc.stderr



BENCHMARK = Path(__file__).resolve().parents[1] / "docs" / "results" / "leaderboard" / "tiny.json"


def test_benchmark_figures_drawn_by_rliable_leave_pyplot_as_it_was(tmp_path):
    """`plot_intervals` and `plot_profiles` draw with rliable's plot_utils (pyplot): on a
    committed benchmark's results, and on results with one statistic or none, they write
    PNGs, close every figure they open and keep the backend."""
    code = textwrap.dedent("""
        import json, sys, matplotlib
        from pathlib import Path
        backend = matplotlib.get_backend()
        from agents.benchmark import plots
        out = Path(sys.argv[2])
        one = {"agents": {"vanilla": {"iqm": {"final_val_ppl": {
            "value": 10.0, "low": 9.5, "high": 10.4}}}}}
        empty = {"agents": {"vanilla": {}, "albert": {}}}
        for name, meta in (("full", json.loads(Path(sys.argv[1]).read_text())), ("one", one),
                           ("empty", empty)):
            plots.plot_intervals(meta, out / f"{name}-intervals.png")
            plots.plot_profiles(meta, out / f"{name}-profiles.png")
        import matplotlib.pyplot as plt
        assert plt.get_fignums() == [], plt.get_fignums()
        assert matplotlib.get_backend() == backend, (backend, matplotlib.get_backend())
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(BENCHMARK), str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": "svg"})
    assert proc.returncode == 0, proc.stderr
    for name in ("intervals", "profiles"):
        width, height = png_size(tmp_path / f"full-{name}.png")
        assert 1000 <= width <= 2600 and 300 <= height <= 1200, (name, width, height)
        png_size(tmp_path / f"one-{name}.png")
        png_size(tmp_path / f"empty-{name}.png")
