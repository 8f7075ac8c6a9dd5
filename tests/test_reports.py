"""Leaderboards in every format, comparability refusal, incomplete runs, plots, compare, cite."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from memorybench import leaderboard as lb
from memorybench.cli import main
from memorybench.compare import compare
from memorybench.runner import RunRequest, evaluate, summarize_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, registry):
    """copy-last, mean-frame and perfect-memory on two smoke tasks (2 episodes each)."""
    root = tmp_path_factory.mktemp("runs")
    specs = [registry.get("occlusion-recall", "smoke"), registry.get("scene-retrieval", "smoke")]
    for m in ("copy-last", "mean-frame", "perfect-memory"):
        evaluate(RunRequest(model=m, tasks=specs, out=root / m, limit=2, progress=False))
    # two models that are not references (memories of the occlusion task; one forgets after 8 frames),
    # so that one can be ranked best
    evaluate(
        RunRequest(
            model="mb_test_models:OcclusionMemory", tasks=specs[:1], out=root / "memory", limit=2, progress=False
        )
    )
    evaluate(
        RunRequest(
            model="mb_test_models:OcclusionMemory",
            model_args={"horizon": 8},
            tasks=specs[:1],
            out=root / "forgets",
            limit=2,
            progress=False,
        )
    )
    return root


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_markdown(runs):
    text = lb.to_markdown(lb.build(lb.load_runs([runs])))
    assert "| Model |" in text and "occlusion-recall@smoke · PSNR mem ↑" in text
    assert "*perfect-memory* (reference)" in text
    # the one non-reference model is marked best; references (in italics) never are
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert any(r.startswith("| occlusion-memory") and "**" in r for r in rows), [r[:60] for r in rows]
    assert not any(r.startswith("| *") and "**" in r for r in rows)
    assert "by memory gap" in text


def test_latex_is_balanced_booktabs(runs):
    tex = lb.to_latex(lb.build(lb.load_runs([runs])))
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert tex.count(r"\begin{table*}") == tex.count(r"\end{table*}")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule"):
        assert rule in tex
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += ch == "{"
        depth -= ch == "}"
        assert depth >= 0
    assert depth == 0
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    for line in body.strip().splitlines():
        assert line.endswith(r"\\") and line.count("&") == tex.split(r"\midrule")[0].splitlines()[-1].count("&")
    assert "_" not in re.sub(r"\\_", "", body)


class _Checker(HTMLParser):
    VOID = {"meta", "br", "img", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_html_is_self_contained_and_well_formed(runs, tmp_path):
    out = tmp_path / "lb.html"
    assert main(["leaderboard", str(runs), "--format", "html", "--out", str(out)]) == 0
    text = out.read_text()
    c = _Checker()
    c.feed(text)
    assert c.stack == []
    assert "http://" not in text and "https://" not in text  # opens offline
    assert c.images and all(src.startswith("data:image/png;base64,") for src in c.images)
    assert base64.b64decode(c.images[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "class='sortable'" in text and "<script>" in text


def test_csv_and_json_round_trip(runs):
    board = lb.build(lb.load_runs([runs]))
    df = pd.read_csv(io.StringIO(lb.to_csv(board)), keep_default_na=False)
    ref = lb.to_frame(board)
    assert list(df.columns) == list(ref.columns) and len(df) == len(ref)
    num = df["mean"].replace("", "nan").astype(float)
    assert (num - ref["mean"]).abs().max() < 1e-4 * max(1.0, ref["mean"].abs().max())
    data = json.loads(lb.to_json(board))
    assert len(data["cells"]) == len(ref) and data["runs"][0]["tasks"][0]["spec_hash"]


def test_incomparable_runs_are_refused_or_split(runs, tmp_path):
    other = copy_run(runs / "mean-frame", tmp_path / "other")
    meta = json.loads((other / "run.json").read_text())
    meta["tasks"][0]["spec_hash"] = "f" * 64
    meta["model"]["identity_hash"] = "e" * 64  # a different model, so not a duplicate
    (other / "run.json").write_text(json.dumps(meta))
    loaded = lb.load_runs([runs / "copy-last", other])
    with pytest.raises(lb.IncomparableRunsError, match="cannot share a column"):
        lb.build(loaded)
    board = lb.build(loaded, split=True)
    cols = board.columns("rollout")
    assert any("[spec ffffffff]" in c for c in cols) and len(cols) == 3
    assert any(c.endswith("[spec ffffffff]") for c in board.legend)  # every split column is explained
    # another selection of episodes is another experiment too
    fewer = copy_run(runs / "mean-frame", tmp_path / "fewer")
    meta = json.loads((fewer / "run.json").read_text())
    meta["tasks"][0]["episodes_selected"] = [0]
    meta["model"]["identity_hash"] = "d" * 64
    (fewer / "run.json").write_text(json.dumps(meta))
    with pytest.raises(lb.IncomparableRunsError, match="episodes"):
        lb.build(lb.load_runs([runs / "copy-last", fewer]))
    assert main(["leaderboard", str(runs / "copy-last"), str(other)]) == 4


def test_incomplete_run_is_marked_never_zero(runs, tmp_path):
    part = copy_run(runs / "copy-last", tmp_path / "partial")
    victim = sorted((part / "records").rglob("ep-*.jsonl"))[0]
    victim.unlink()
    summarize_run(part, retention=False)
    text = lb.to_markdown(lb.build(lb.load_runs([part, runs / "perfect-memory"])))
    assert "†" in text and "incomplete: 1 of 2 episodes" in text
    frame = lb.to_frame(lb.build(lb.load_runs([part])))
    assert (frame[frame.note != ""]["complete"] == False).all()  # noqa: E712
    # a partial run is shown, marked in the by-gap tables too, and never ranked best
    board = lb.build(lb.load_runs([part, runs / "mean-frame"]))
    cells = board.cells[board.cells.model == "copy-last"]
    partial = cells[cells.column.isin({c for (_, c, _) in board.notes})]
    assert not partial.empty
    for _, cell in partial.iterrows():
        assert board.best(cell.column, cell.protocol, cell.metric, cell.gap_bin) in (None, "mean-frame")
    gap_rows = [
        line
        for line in lb.to_markdown(board).split("by memory gap")[1].splitlines()
        if line.startswith("| *copy-last*")
    ]
    assert gap_rows and "†" in gap_rows[0]


def test_duplicate_runs_refused(runs, tmp_path):
    dup = copy_run(runs / "copy-last", tmp_path / "dup")
    with pytest.raises(Exception, match="two runs of copy-last"):
        lb.build(lb.load_runs([runs / "copy-last", dup]))


def _worsen(run: Path, metric: str, by: float) -> None:
    s = json.loads((run / "summary.json").read_text())
    for g in s["groups"].values():
        v = g["metrics"][metric]
        v["mean"] -= by
        v["ci_low"] -= by
        v["ci_high"] -= by
    (run / "summary.json").write_text(json.dumps(s))


def test_compare_exit_codes(runs, tmp_path):
    base = runs / "mean-frame"
    same = copy_run(base, tmp_path / "same")
    rows, code = compare(base, same)
    assert code == 0 and all(r.status == "ok" for r in rows)
    small = copy_run(base, tmp_path / "small")
    _worsen(small, "psnr", 0.2)  # within the default 0.5 dB tolerance
    assert compare(base, small)[1] == 0
    bad = copy_run(base, tmp_path / "bad")
    _worsen(bad, "psnr_memory", 3.0)
    rows, code = compare(base, bad)
    assert code == 1 and {r.metric for r in rows if r.status == "regression"} == {"psnr_memory"}
    assert main(["compare", str(base), str(bad)]) == 1
    assert main(["compare", str(base), str(same)]) == 0
    assert main(["compare", str(base), str(bad), "--tolerance", "psnr_memory=5"]) == 0
    # better is never a regression
    good = copy_run(base, tmp_path / "good")
    _worsen(good, "psnr", -3.0)
    assert compare(base, good)[1] == 0
    # not comparable: another task spec
    other = copy_run(base, tmp_path / "other")
    meta = json.loads((other / "run.json").read_text())
    meta["tasks"][0]["dataset_sha256"] = "0" * 64
    (other / "run.json").write_text(json.dumps(meta))
    assert main(["compare", str(base), str(other)]) == 4


def test_plots_and_cite(runs, tmp_path, capsys):
    assert main(["plot", str(runs), "--out", str(tmp_path / "figs")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "figs").glob("*.png"))
    assert "memory-curve-psnr_memory-rollout.png" in pngs and "steps-psnr-rollout.png" in pngs
    assert (tmp_path / "figs" / "memory-curve-psnr_memory-rollout.pdf").read_bytes()[:4] == b"%PDF"
    capsys.readouterr()
    assert main(["cite", str(runs), "--model", "copy-last"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("@software{memorybench") and "zhang2018lpips" in out
