"""results/paper_comparison.md: the LSSVWM paper's numbers beside ours, orderings computed from runs."""

from __future__ import annotations

import pytest

from memorybench.paper import PUBLISHED, comparison_markdown, main, orderings


def run(name, task, psnr, ssim, lpips, recall=0.0, ci=0.1, privileged=False, parameters=None):
    def v(x, w):
        return {"mean": x, "ci_low": x - w, "ci_high": x + w, "n": 32}

    group = {
        "episodes": 32,
        "complete": True,
        "metrics": {
            "psnr": v(psnr, ci),
            "ssim": v(ssim, ci / 100),
            "lpips": v(lpips, ci / 100),
            "recall": v(recall, 0.01),
        },
    }
    return {
        "path": f"runs/{name}",
        "summary": {"groups": {f"{task}/rollout": group}},
        "meta": {"model": {"name": name, "privileged": privileged, "parameters": parameters}},
    }


def test_published_numbers_and_references():
    text = comparison_markdown(
        [
            run("copy-last", "maze-retrieval@paper", 14.1, 0.41, 0.52),
            run("perfect-memory", "maze-retrieval@paper", 22.0, 0.7, 0.2, 0.86, privileged=True),
        ]
    )
    assert "| causal full context (ours: `full-attention`) | — | 32.60 | 0.914 | 0.057 | not run yet |" in text
    assert "| Mamba2 + frame-local attn | — | 19.30 | 0.735 | 0.336 | no counterpart |" in text
    assert "| *perfect-memory* (reference, privileged) |" in text and "0.860 [0.850, 0.870]" in text
    assert "*copy-last* (no-memory reference)" in text and "14.10 [14.00, 14.20]" in text
    assert text.count("No zoo model has been run on this task yet") == 2  # reasoning: no runs at all
    assert PUBLISHED["maze-reasoning@paper"]["LSSVWM"] == (28.2, 0.855, 0.099)


def test_zoo_models_take_the_paper_columns_and_orderings_are_computed():
    task = "maze-retrieval@paper"
    runs = [
        run("lssvwm", task, 15.0, 0.50, 0.40, parameters=2_168_067),  # paper: LSSVWM > Mamba2 everywhere
        run("mamba", task, 12.0, 0.55, 0.4005),
        run("full-attention", task, 14.95, 0.45, 0.30),
    ]
    text = comparison_markdown(runs)
    assert "| LSSVWM (ours: `lssvwm`) | 2,168,067 | 30.80 | 0.898 | 0.069 | 15.00 [14.90, 15.10]" in text
    rows = {
        (pair, metric): ours
        for pair, metric, _, ours in orderings(
            task, {r["meta"]["model"]["name"]: (r["summary"]["groups"][f"{task}/rollout"], r["meta"]) for r in runs}
        )
    }
    assert rows[("Mamba2 vs LSSVWM", "PSNR")] == "same"  # LSSVWM better in both
    assert rows[("Mamba2 vs LSSVWM", "SSIM")] == "reversed"  # ours: mamba's SSIM is higher, CIs apart
    assert rows[("Mamba2 vs LSSVWM", "LPIPS")] == "tied (CIs overlap)"
    assert rows[("LSSVWM vs causal full context", "PSNR")] == "tied (CIs overlap)"
    assert rows[("LSSVWM vs causal full context", "LPIPS")] == "same"  # full context lower LPIPS in both


def test_one_run_per_model_and_the_command(tmp_path):
    task = "maze-reasoning@paper"
    with pytest.raises(ValueError, match="two runs of 'lssvwm'"):
        comparison_markdown([run("lssvwm", task, 1, 0.1, 0.9), run("lssvwm", task, 2, 0.2, 0.8)])
    with pytest.raises(SystemExit):
        main(["--help"])


def test_the_training_sentence_reads_what_the_checkpoints_were_trained_on():
    task = "maze-retrieval@paper"

    def trained(name, keys):
        r = run(name, task, 10.0, 0.2, 0.7)
        r["meta"]["model"]["trained_on"] = {"tasks": [{"key": k} for k in keys]}
        return r

    only_occlusion = comparison_markdown([trained("lssvwm", ["occlusion-recall@standard"])])
    assert "trained on `occlusion-recall@standard` only, never on a maze" in only_occlusion
    mix = ["maze-reasoning@standard", "maze-retrieval@standard", "occlusion-recall@standard"]
    with_maze = comparison_markdown([trained("lssvwm", mix), trained("mamba", mix)])
    assert "never on a maze" not in with_maze
    assert "trained on `maze-reasoning@standard`, `maze-retrieval@standard`, `occlusion-recall@standard` (" in with_maze
    assert "(no run of ours in the paper's columns yet)." in comparison_markdown([run("copy-last", task, 14, 0.4, 0.5)])
