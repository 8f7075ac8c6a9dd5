"""The metric registry: one record per metric, and a user metric registered through an entry point
that shows up in summaries, tables, compare and --metrics without other changes."""

from __future__ import annotations

import json

import pytest

from memorybench import metric_registry as registry
from memorybench.errors import MemorybenchError

PLUGIN = '''
import torch
from memorybench.metric_registry import Metric


def mean_abs(pred, target, memory_mask, novel_mask):
    """Mean absolute error over the whole frame."""
    return (pred - target).abs().mean(dim=(1, 2, 3))


METRIC = Metric("mean_abs", "Mean abs err", higher_is_better=False, decimals=4, tolerance=0.01,
                fn=mean_abs, description="mean absolute error over the frame (a user metric)")
NOT_A_METRIC = 3
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A throwaway package declaring an entry point in the group memorybench.metrics."""
    (tmp_path / "mbmetric.py").write_text(PLUGIN)
    dist = tmp_path / "mbmetric-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mbmetric\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[memorybench.metrics]\nmean_abs = mbmetric:METRIC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    registry.METRICS.clear_cache()
    yield dist
    registry.METRICS.clear_cache()


def test_every_builtin_has_its_record():
    table = registry.all_metrics()
    assert table["recall"].chance == 0 and table["recall"].kind == "item" and table["recall"].higher_is_better
    assert table["psnr_memory"].kind == "psnr" and table["psnr_memory"].source == "mse_memory"
    assert not table["lpips"].higher_is_better and table["lpips"].tolerance == 0.01
    assert table["memory_horizon"].decimals == 0
    with pytest.raises(MemorybenchError, match="Did you mean 'recall'"):
        registry.get("recal")
    with pytest.raises(MemorybenchError, match="Did you mean 'psnr_memory'"):
        registry.check_names("psnr,psnr_memroy")


def test_a_user_metric_shows_up_everywhere(plugin, registry_fixture, tmp_path):
    from memorybench import leaderboard as lb
    from memorybench.compare import compare
    from memorybench.runner import RunRequest, evaluate

    assert "mean_abs" in registry.all_metrics()
    spec = registry_fixture.get("occlusion-recall", "smoke")
    runs = {}
    for model in ("copy-last", "blur-last"):
        runs[model] = evaluate(
            RunRequest(model=model, tasks=[spec], out=tmp_path / model, progress=False, retention=False)
        )
    group = json.loads((runs["copy-last"] / "summary.json").read_text())["groups"][f"{spec.key}/rollout"]
    value = group["metrics"]["mean_abs"]
    assert 0 < value["mean"] < 1 and value["ci_low"] <= value["mean"] <= value["ci_high"]
    run_json = json.loads((runs["copy-last"] / "run.json").read_text())
    assert "mean_abs" in run_json["metrics"]["user_metrics"] and run_json["metrics"]["registry"]["mean_abs"]["user"]
    board = lb.build(lb.load_runs(list(runs.values())), metrics=registry.check_names("recall,mean_abs"))
    md = lb.to_markdown(board)
    assert "Mean abs err ↓" in md and f"{value['mean']:.4f}" in md
    rows, code = compare(runs["copy-last"], runs["copy-last"], ["mean_abs"])
    assert code == 0 and rows[0].metric == "mean_abs" and rows[0].tolerance == 0.01


def test_a_broken_plugin_is_a_clear_error(plugin):
    (plugin / "entry_points.txt").write_text("[memorybench.metrics]\nbad = mbmetric:NOT_A_METRIC\n")
    registry.METRICS.clear_cache()
    with pytest.raises(MemorybenchError, match="metric plugin 'bad' .* is not a memorybench Metric"):
        registry.all_metrics()


@pytest.fixture
def registry_fixture(registry):
    return registry
