"""The benchmarks in bench/: they run on tiny shapes, print their tables, and memory is exact."""

import json
from pathlib import Path

import pytest

# perf/ is importable from the repo root (pythonpath)
from perf import gpu, memory, speed, throughput
from tying_env.data.corpus import default_shared_data_dir
from tying_env.presets import PRESETS

TINY = ["--n-layer", "4", "--n-embd", "32", "--n-head", "2", "--seq-len", "16",
        "--vocab-size", "128", "--batch-size", "2", "--threads", "1"]


def test_gpu_smoke_runs_on_cpu(capsys, tmp_path: Path) -> None:
    rows = gpu.main(["--smoke", "--device", "cpu", "--steps", "1", "--warmup", "0",
                     "--json", str(tmp_path / "gpu.json")])
    out = capsys.readouterr().out
    header = "| " + " | ".join(gpu.COLUMNS) + " |"
    assert header in out
    assert [(r["shape"], r["ties"], r["dtype"], r["status"]) for r in rows] == [
        ("smoke", "untied", "fp32", "ok"), ("smoke", "75% copy", "fp32", "ok"),
        ("smoke", "untied", "bf16", "ok"), ("smoke", "75% copy", "bf16", "ok")]
    table = [line for line in out.splitlines() if line.startswith("| smoke |")]
    assert len(table) == 4 and all(line.count("|") == len(gpu.COLUMNS) + 1 for line in table)
    assert all("| n/a |" in line for line in table)  # no peak CUDA memory on the CPU
    assert rows[0]["tokens/s"] > 0 and rows[1]["trainable params"] < rows[0]["trainable params"]
    assert all(r["TFLOP/s"] > 0 and r["% peak"] is None for r in rows)  # no GPU peak here
    assert json.loads((tmp_path / "gpu.json").read_text())["rows"][1]["ties"] == "75% copy"


def test_speed_prints_ratios_and_targets(capsys, tmp_path: Path) -> None:
    result = speed.main([*TINY, "--rounds", "1", "--steps", "1", "--warmup", "0",
                         "--env-sweeps", "0", "--json", str(tmp_path / "speed.json")])
    out = capsys.readouterr().out
    for name in ("ours untied", "ours 75% copy", "ours 75% share", "reference untied",
                 "reference 75% tied", "tied-copy / untied", "tied-share / untied",
                 "ours untied / reference untied", "load average"):
        assert f"{name}" in out
    assert "PASS" in out or "FAIL" in out
    assert set(result["ratios"]) >= {"tied-copy / untied", "ours untied / reference untied"}
    assert all(v > 0 for v in result["ratios"].values())
    assert json.loads((tmp_path / "speed.json").read_text())["steps_ms"]["ours untied"]["n"] == 1


def test_speed_env_overhead(capsys, cache_dir: Path) -> None:
    if not (default_shared_data_dir() / "wikitext-2" / "valid.txt").exists():
        pytest.skip("the env overhead needs the shared offline WikiText-2")
    env = speed.measure_env(1, cache_dir, dict(n_layer=3, n_embd=16, n_head=2, seq_len=16,
                                               vocab_size=512, batch_size=2, eval_batches=1))
    assert env["decisions"] == 2
    assert 0.0 <= env["median_fraction"] < 1.0
    assert env["median_step_ms"] >= env["median_train_ms"]


def test_reference_tying_skips_weight_gradients() -> None:
    import torch

    from perf.reference import ReferenceGPT, tie_published

    model = ReferenceGPT(3, 16, 2, 8, 32, dropout=0.0)
    tie_published(model, [0, 0, 2])
    x = torch.randint(0, 32, (2, 8))
    model.loss(x, x).backward()
    h = model.h
    assert h[1].mlp.c_fc.weight.data_ptr() == h[0].mlp.c_fc.weight.data_ptr()
    assert h[1].mlp.c_fc.weight.grad is None and h[0].mlp.c_fc.weight.grad is not None
    assert model.wte.weight is model.lm_head.weight


@pytest.mark.parametrize("mode", ["copy", "share"])
def test_memory_small_preset_is_exactly_analytic(mode: str) -> None:
    n_layer = PRESETS["small"]["n_layer"]
    untied, untied_want = memory.measure_small(memory.tie_map(n_layer, 0.0), mode)
    tied, tied_want = memory.measure_small(memory.tie_map(n_layer, 0.75), mode)
    assert untied == untied_want and tied == tied_want
    assert untied.total / tied.total == untied_want.total / tied_want.total


@pytest.mark.parametrize("mode,tied", [("copy", False), ("copy", True), ("share", True)])
def test_step_flops_equal_torch_flop_counter(mode: str, tied: bool) -> None:
    """The analytic FLOPs of a step are those torch counts in forward + backward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cfg = throughput.make_config("tiny", n_layer=4, n_embd=32, n_head=2, seq_len=16,
                                 vocab_size=50, batch_size=3)
    model, _, ties = throughput.build(cfg, mode, tied)
    batch = torch.randint(0, 50, (3, 17), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        model.loss(batch[:, :-1], batch[:, 1:]).backward()
    assert counter.get_total_flops() == throughput.step_flops(cfg, ties, mode)
    assert (ties != list(range(4))) == tied


def test_throughput_prints_shares_and_profile(capsys, tmp_path: Path) -> None:
    result = throughput.main(["--presets", "tiny", "--threads", "1", "--rounds", "1",
                              "--steps", "1", "--warmup", "0", "--peak-size", "256",
                              "--profile", "--json", str(tmp_path / "t.json")])
    out = capsys.readouterr().out
    assert "matmul peak (256^2 fp32 mm)" in out and "top operations, tiny untied" in out
    rows = result["presets"][0]["rows"]
    assert set(rows) == {"untied", "75% copy", "75% share"}
    for row in rows.values():
        assert row["share_of_peak"] == pytest.approx(row["gflops"] / result["peak_gflops"])
        assert "| tiny | " in out and f"{row['share_of_peak']:.1%}" in out
    assert rows["75% copy"]["gflop_per_step"] < rows["untied"]["gflop_per_step"]
    assert result["profiles"]["tiny"][0]["op"].startswith("aten::")
    assert "tiny: untied >= 30% of the matmul peak" in result["targets"]
    assert json.loads((tmp_path / "t.json").read_text())["presets"][0]["preset"] == "tiny"


def test_tracktime_splits_a_decision_and_estimates_the_track(monkeypatch, capsys,
                                                             cache_dir: Path) -> None:
    from agents.benchmark import tracks
    from perf import tracktime

    quick = tracks.Track(name="quick", version=1, env_id="LayerTying-GPT2-Tiny-v0",
                         env_kwargs={"n_layer": 3, "n_embd": 16, "n_head": 2, "seq_len": 16,
                                     "batch_size": 2, "max_sweeps": 2, "eval_batches": 1},
                         seeds=(0, 1), agents=("albert",), description="test")
    monkeypatch.setitem(tracks.TRACKS, "quick", quick)
    result = tracktime.main(["--track", "quick", "--decisions", "3", "--cache-dir",
                             str(cache_dir)])
    m = result["mean"]
    assert result["decisions"] == 3 and result["budget"] == 4
    assert m["train"] > 0 and m["evaluate"] > 0
    assert m["total"] == pytest.approx(m["train"] + m["evaluate"] + m["other"], rel=1e-6)
    episode = 4 * m["total"] + result["final_evaluation"]
    assert result["episode_seconds"] == pytest.approx(episode)
    assert result["main_cells"] == 2 and result["episodes"] == 2
    assert result["track_hours"] == pytest.approx(2 * episode / 2 / 3600)
    assert "| train |" in capsys.readouterr().out
    # train-then-test: a learner's cell plays its training episodes too, a schedule's not
    transfer = tracks.Track(**{**quick.__dict__, "name": "quick-transfer",
                               "agents": ("albert", "qlearning"), "train_episodes": 3,
                               "eval_episodes": 2})
    assert tracktime.cell_episodes(transfer, "albert") == 2
    assert tracktime.cell_episodes(transfer, "qlearning") == 5
    assert tracktime.cell_episodes(quick, "qlearning") == 1


# ---------------------------------------------------------------- perf.families
def _strings(value: object) -> list[str]:
    """Every string (keys included) in a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_families_report_is_consistent(capsys, tmp_path: Path, cache_dir: Path) -> None:
    import math

    from perf import families

    # the four tasks' families (causal BERT runs BERT's blocks on GPT-2's task: the same
    # code paths, left out for time)
    result = families.main(["--rounds", "1", "--steps", "2", "--warmup", "0", "--sweeps", "1",
                            "--threads", "1", "--cache-dir", str(cache_dir),
                            "--families", "gpt2,llama,bert,vit",
                            "--json", str(tmp_path / "families.json")])
    out = capsys.readouterr().out
    rows = result["families"]
    assert [r["family"] for r in rows] == ["gpt2", "llama", "bert", "vit"]
    assert [r["preset"] for r in rows] == ["tiny", "llama-tiny", "bert-tiny", "vit-tiny"]
    for r in rows:
        steps = r["steps_ms"]
        assert set(steps) == {"untied", "75% copy", "75% share"}
        for s in steps.values():
            assert s["n"] == 2
            assert all(math.isfinite(s[k]) and s[k] > 0 for k in ("median_ms", "min_ms",
                                                                  "max_ms"))
        assert r["ratios"]["copy / untied"] == pytest.approx(
            steps["75% copy"]["median_ms"] / steps["untied"]["median_ms"])
        assert r["ratios"]["share / untied"] == pytest.approx(
            steps["75% share"]["median_ms"] / steps["untied"]["median_ms"])
        assert r["copy_target_met"] == (r["ratios"]["copy / untied"]
                                        <= families.TARGET_TIED_RATIO)
        p = r["params"]
        assert p["trainable_untied"] == p["total"] and p["trainable_fraction_untied"] == 1.0
        assert p["trainable_tied"] == p["total"] - r["layers_tied"] * p["block"]
        assert r["ties"] == memory.tie_map(r["shape"]["n_layer"], 0.75)
        env = r["env"]
        assert env["decisions"] == r["shape"]["n_layer"] - 1
        assert all(math.isfinite(env[k]) and env[k] > 0
                   for k in ("step_ms", "train_ms", "evaluate_ms"))
        assert env["overhead_ms"] == pytest.approx(
            env["step_ms"] - env["train_ms"] - env["evaluate_ms"])
        assert env["overhead_fraction"] == pytest.approx(env["overhead_ms"] / env["step_ms"])
        line = next(x for x in out.splitlines() if x.startswith(f"| {r['family']} |"))
        assert line.count("|") == 16 and f"{r['ratios']['copy / untied']:.3f}" in line
    saved = json.loads((tmp_path / "families.json").read_text())
    assert saved["threads"] == 1 and saved["rounds"] == 1 and saved["steps"] == 2
    assert saved["torch"] and "commit" in saved
    assert [r["ratios"] for r in saved["families"]] == [r["ratios"] for r in rows]
    assert not [s for s in _strings(saved)
                if s.startswith("/") or str(tmp_path) in s or str(cache_dir) in s]


def test_families_restrict_and_skip_env(capsys, cache_dir: Path) -> None:
    from perf import families

    result = families.main(["--families", "vit,gpt2", "--rounds", "1", "--steps", "1",
                            "--warmup", "0", "--sweeps", "0", "--threads", "1",
                            "--cache-dir", str(cache_dir)])
    out = capsys.readouterr().out
    assert [r["family"] for r in result["families"]] == ["vit", "gpt2"]
    assert all(r["env"] is None for r in result["families"])
    assert "| vit |" in out and "| gpt2 |" in out and "| llama |" not in out
    assert "n/a" in out


def test_families_cover_every_family_with_its_tiny_preset() -> None:
    from perf import families
    from tying_env.models import FAMILIES

    assert set(families.FAMILY_PRESETS) == set(FAMILIES)
    for family, preset in families.FAMILY_PRESETS.items():
        assert PRESETS[preset].get("family", "gpt2") == family and "tiny" in preset


@pytest.mark.parametrize("value", ["gpt2,gpt3", "", "Llama"])
def test_families_bad_name_is_an_argparse_error(capsys, value: str) -> None:
    from perf import families

    with pytest.raises(SystemExit) as exc:
        families.main(["--families", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--families" in err and "allowed: gpt2, llama, bert, vit" in err
