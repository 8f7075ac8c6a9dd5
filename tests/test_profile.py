"""The efficiency track's bookkeeping (not its timings)."""

from __future__ import annotations

import json
import sys

import pytest

from memorybench.cli import main
from memorybench.errors import MemorybenchError
from memorybench.profile import ProfileConfig, fit_slope, load_profiles, measure_point, profile_model, summary_rows


def test_fit_slope_recovers_power_laws():
    xs = [64, 128, 256, 512, 1024]
    assert fit_slope(xs, [3.0] * 5)["slope"] == pytest.approx(0.0, abs=1e-12)
    f = fit_slope(xs, [0.5 * x for x in xs])
    assert f["slope"] == pytest.approx(1.0) and f["ratio"] == pytest.approx(16.0)
    assert fit_slope(xs, [x**2 for x in xs])["slope"] == pytest.approx(2.0)
    assert fit_slope([64], [1.0])["slope"] is None
    assert fit_slope(xs, [None, 1, 2, None, 4])["points"] == 3


def test_measure_point_fields():
    cfg = ProfileConfig(contexts=(32,), repeats=3, warmup=1, resolution=(64, 64), subprocess=False)
    p = measure_point("copy-last", 32, cfg)
    assert p["context"] == 32 and p["latency_ms"] > 0 and p["latency_ms_p90"] >= p["latency_ms"]
    assert p["state_mb"] == pytest.approx(3 * 64 * 64 * 4 / 2**20)  # one float32 frame
    # in a long-lived process (like this test session) the peak can sit below the earlier baseline,
    # since memory freed in between comes off the reset peak: the profiler measures in fresh processes
    assert p["peak_memory_mb"] > 0 and p["process_baseline_mb"] > 0
    if sys.platform.startswith("linux"):  # the peak is counted from the live set after the context pass
        assert p["peak_memory_kind"] in ("vmhwm_after_trim_reset", "vmhwm_after_reset")
        assert p["peak_memory_mb"] >= p["rss_before_generation_mb"] > 0


def test_profile_model_in_subprocesses_and_summary(tmp_path):
    cfg = ProfileConfig(contexts=(16, 64), repeats=3, warmup=1, fit_from=16)
    prof = profile_model("mean-frame", cfg)
    assert [p["context"] for p in prof["points"]] == [16, 64]
    for p in prof["points"]:  # a fresh process per point: its peak includes its own baseline
        assert p["peak_memory_mb"] >= p["process_baseline_mb"] > 0
    assert prof["fits"]["state_mb"]["slope"] == pytest.approx(0.0, abs=1e-9)  # mean-frame keeps one sum
    (row,) = summary_rows([prof])
    assert row["latency_ms_ratio"] == pytest.approx(prof["points"][1]["latency_ms"] / prof["points"][0]["latency_ms"])
    with pytest.raises(MemorybenchError, match="privileged"):
        profile_model("ground-truth", cfg)


def test_cli_profile_writes_json_and_plots(tmp_path):
    out = tmp_path / "p.json"
    assert (
        main(
            [
                "profile",
                "--model",
                "copy-last",
                "--context",
                "8,32",
                "--repeats",
                "2",
                "--warmup",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    (prof,) = load_profiles(out)
    assert prof["model"] == "copy-last" and len(prof["points"]) == 2
    assert json.loads(out.read_text())["environment"]["libraries"]["torch"]
    assert (tmp_path / "p-latency_ms.png").exists() and (tmp_path / "p-state_mb.pdf").exists()
    assert main(["profile", "--model", "copy-last", "--context", "x"]) == 2
