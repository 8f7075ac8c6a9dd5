"""A user's mistake gets one clear line and an exit code, never a Python traceback, and is caught
before any model runs (issue 17: "Errors and flags")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from memorybench.cli import app, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, _session_cache):
    """One finished copy-last run (2 smoke episodes, rollout), shared by the tests that read one."""
    os.environ["MEMORYBENCH_CACHE"] = _session_cache  # the autouse fixture is function-scoped
    out = tmp_path_factory.mktemp("small") / "runs"
    assert (
        main(
            [
                "run",
                "--model",
                "copy-last",
                "--tasks",
                "occlusion-recall@smoke",
                "--limit",
                "2",
                "--out",
                str(out),
                "--device",
                "cpu",
                "--no-retention",
                "--save-predictions",
            ]
        )
        == 0
    )
    return out / "copy-last"


def _fails(capsys, argv, rc, *needles):
    assert main(argv) == rc
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for n in needles:
        assert n in " ".join(err.split()), err  # rich wraps long lines
    return err


def test_out_pointing_at_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("mine")
    _fails(capsys, ["run", "--model", "copy-last", "--out", str(f)], 2, "is a file, not a directory")
    _fails(capsys, ["tasks", "generate", "occlusion-recall@smoke", "--out", str(f)], 2, "is a file")
    _fails(capsys, ["report", str(tmp_path), "--out", str(f / "sub")], 2, "is a file")
    assert f.read_text() == "mine"


def test_generate_never_replaces_a_foreign_directory(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    _fails(capsys, ["tasks", "generate", "occlusion-recall@smoke", "--out", str(d)], 2, "is not a memorybench dataset")
    assert (d / "thesis.tex").read_text() == "precious"


def test_bootstrap_zero_is_refused_before_anything_runs(tmp_path, capsys):
    _fails(
        capsys,
        [
            "run",
            "--model",
            "copy-last",
            "--tasks",
            "occlusion-recall@smoke",
            "--bootstrap",
            "0",
            "--out",
            str(tmp_path / "r"),
        ],
        2,
        "--bootstrap must be >= 1",
    )
    assert not (tmp_path / "r").exists()


def test_plot_errors(small_run, tmp_path, capsys):
    _fails(
        capsys,
        ["plot", str(small_run), "--formats", "jpg", "--out", str(tmp_path)],
        2,
        "unknown figure format 'jpg'",
        "Did you mean 'png'",
    )
    _fails(
        capsys,
        ["plot", str(small_run), "--protocol", "teacher-forced", "--out", str(tmp_path)],
        2,
        "hold no teacher-forced results",
        "they hold: rollout",
    )
    assert not list(tmp_path.iterdir())


def test_preview_bad_frame_range(tmp_path, capsys):
    _fails(
        capsys,
        [
            "tasks",
            "preview",
            "occlusion-recall",
            "--tier",
            "smoke",
            "--frames",
            "10:5",
            "--out",
            str(tmp_path / "x.png"),
        ],
        2,
        "--frames 10:5: need 0 <= START < STOP <= 72",
    )


def test_profile_errors_are_one_line(tmp_path, capsys):
    _fails(capsys, ["profile", "--model", "copy-last", "--repeats", "0", "--context", "8"], 2, "--repeats must be >= 1")
    # an error inside the measuring subprocess comes back as its message, not as its traceback
    err = _fails(
        capsys,
        [
            "profile",
            "--model",
            "frame-local-attention",
            "--model-args",
            "checkpoint=none,window=0",
            "--context",
            "8",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--out",
            str(tmp_path / "p.json"),
        ],
        2,
        "profiling frame-local-attention at context 8 failed",
        "window must be >= 1",
    )
    assert 'File "' not in err


@pytest.fixture
def bad_models(tmp_path, monkeypatch):
    (tmp_path / "mb_bad_ctor.py").write_text(
        "from memorybench.models.calibration import CopyLast\n\n"
        "class Picky(CopyLast):\n"
        "    def __init__(self, window=3):\n"
        "        self.window = int(window)\n"
    )
    (tmp_path / "mb_bad_import.py").write_text("raise RuntimeError('cannot find libfoo.so')\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_model_constructor_or_module_raising(bad_models, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEMORYBENCH_DEBUG", raising=False)
    common = ["--tasks", "occlusion-recall@smoke", "--limit", "1", "--device", "cpu", "--no-retention"]
    _fails(
        capsys,
        ["run", "--model", "mb_bad_ctor:Picky", "--model-args", "window=abc", "--out", str(tmp_path / "a"), *common],
        2,
        "model 'mb_bad_ctor:Picky' could not be built (window='abc')",
        "ValueError: invalid literal for int()",
        "MEMORYBENCH_DEBUG=1",
    )
    _fails(
        capsys,
        ["run", "--model", "mb_bad_import:Model", "--out", str(tmp_path / "b"), *common],
        2,
        "cannot load model 'mb_bad_import:Model': importing mb_bad_import raised RuntimeError: cannot find libfoo.so",
    )
    _fails(
        capsys,
        ["run", "--model", "no_such_module_xyz:Model", "--out", str(tmp_path / "c"), *common],
        2,
        "cannot find the module 'no_such_module_xyz'",
    )
    _fails(
        capsys,
        [
            "run",
            "--model",
            "frame-local-attention",
            "--model-args",
            "checkpoint=none,width=abc",
            "--out",
            str(tmp_path / "d"),
            *common,
        ],
        2,
        "config field width must be an integer, got 'abc'",
    )
    # the traceback is there for whoever asks for it
    monkeypatch.setenv("MEMORYBENCH_DEBUG", "1")
    assert (
        main(
            ["run", "--model", "mb_bad_ctor:Picky", "--model-args", "window=abc", "--out", str(tmp_path / "e"), *common]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" in err and "self.window = int(window)" in err


def test_load_model_errors_are_memorybench_errors(bad_models):
    from memorybench.errors import MemorybenchError
    from memorybench.models import load_model

    with pytest.raises(MemorybenchError, match="its constructor raised ValueError") as e:
        load_model("mb_bad_ctor:Picky", {"window": "abc"})
    assert isinstance(e.value.__cause__, ValueError)  # chained: --debug / MEMORYBENCH_DEBUG can show it
    with pytest.raises(MemorybenchError, match="RuntimeError: cannot find libfoo.so"):
        load_model("mb_bad_import:Model")


# -- fast validation: before torch, before any model runs --------------------------------------------

_PROBE = (
    "import sys, time; t = time.perf_counter(); from memorybench.cli import main; rc = main(sys.argv[1:]); "
    "print('ELAPSED', time.perf_counter() - t); "
    "print('HEAVY', [m for m in ('torch', 'pandas', 'datasets') if m in sys.modules]); sys.exit(rc)"
)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--model", "copy-last,lsvwm"], "unknown model 'lsvwm'. Did you mean 'lssvwm'?"),
        (["run", "--tasks", "smok"], "unknown task or tier 'smok'. Did you mean 'smoke'?"),
        (
            ["run", "--tasks", "occlusion-recall@smok"],
            "task 'occlusion-recall' has no tier 'smok'. Did you mean 'smoke'?",
        ),
        (["run", "--device", "cdua"], "unknown device 'cdua'. Did you mean 'cuda'"),
        (["run", "--protocol", "teacher"], "unknown protocol 'teacher'. Did you mean 'teacher-forced'?"),
        (["run", "--bootstrap", "0"], "--bootstrap must be >= 1"),
        (["run", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["run", "--resume"], "--resume needs --out"),
        (["profile", "--model", "mambaa"], "Did you mean 'mamba'?"),
        (["train", "lsvwm", "--out", "x"], "Did you mean 'lssvwm'?"),
    ],
)
def test_typos_fail_fast_without_heavy_imports(argv, message, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    wall = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert "HEAVY []" in proc.stdout, proc.stdout  # torch, pandas, datasets were never imported
    assert wall < 5, f"{argv}: {wall:.1f}s"  # generous (measured ~0.6-1 s on a busy 2-core machine)
    assert not (tmp_path / "runs").exists()


def test_second_model_typo_stops_before_the_first_runs(tmp_path, capsys):
    assert main(["run", "--model", "copy-last,lsvwm", "--tasks", "occlusion-recall@smoke", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "copy-last").exists()


# -- resume, run layouts, metric names -------------------------------------------------------------------


def test_resume_mismatch_says_what_differs(small_run, tmp_path, capsys):
    out = tmp_path / "runs"
    shutil.copytree(small_run, out / "copy-last")
    err = _fails(
        capsys,
        [
            "run",
            "--model",
            "copy-last",
            "--tasks",
            "occlusion-recall@smoke",
            "--limit",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-retention",
            "--resume",
        ],
        2,
        "holds a different run",
        "occlusion-recall@smoke: on disk evaluates 2 episodes (0-1), requested 1 episode (0)",
    )
    assert "spec_hash" not in err


def test_leaderboard_reads_the_default_run_layout(small_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(small_run, runs / "20250101-120000" / "copy-last")
    assert main(["leaderboard", str(runs)]) == 0
    assert "copy-last" in capsys.readouterr().out
    shutil.copytree(small_run, runs / "copy-last")  # a run beside directories of runs: ambiguous
    _fails(
        capsys,
        ["leaderboard", str(runs)],
        2,
        "holds both run directories (copy-last) and directories of runs (20250101-120000/)",
    )


def test_unknown_metric_is_an_error(small_run, capsys):
    _fails(
        capsys, ["leaderboard", str(small_run), "--metrics", "psnr,psnrr"], 2, "unknown metric 'psnrr'. Did you mean"
    )
    _fails(
        capsys, ["compare", str(small_run), str(small_run), "--metrics", "lpips_mem"], 2, "unknown metric 'lpips_mem'"
    )
    _fails(capsys, ["compare", str(small_run), str(small_run), "--tolerance", "lpip=0.1"], 2, "unknown metric 'lpip'")
    assert main(["leaderboard", str(small_run), "--metrics", "ssim_known,retention_lpips"]) == 0


# -- help ------------------------------------------------------------------------------------------------


def _commands(cmd, path=()):
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


def test_every_option_has_help_text():
    missing = [
        f"{path} {'/'.join(p.opts)}"
        for path, cmd in _commands(typer.main.get_command(app))
        for p in cmd.params
        if not (getattr(p, "help", None) or "").strip()
    ]
    assert not missing, f"options without help: {missing}"
    assert len(list(_commands(typer.main.get_command(app)))) >= 15


def test_flags_render_as_flags(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[1]: ln for ln in out.splitlines() if len(ln.split()) > 1 and ln.split()[1].startswith("--")}
    for flag in ("--resume", "--save-predictions", "--retention", "--help"):
        assert "<bool>" not in lines[flag], lines[flag]
    assert "<int>" in lines["--batch-size"]
