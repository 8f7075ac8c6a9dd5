"""Task files: the built-in ones load; broken ones give errors that name the file and the field."""

from __future__ import annotations

import textwrap

import pytest

from memorybench.cli import main
from memorybench.errors import TaskSpecError, UnknownNameError
from memorybench.taskfile import load_task_file
from memorybench.tasks import TaskRegistry

GOOD = textwrap.dedent("""\
    name: my-task
    family: occlusion_recall
    generator_version: 2
    description: a user task
    common:
      seed: 7
      recent_window: 4
    tiers:
      smoke:
        frames: 80
        context_frames: 64
        resolution: [32, 32]
        episodes: 2
        params: {slots: [2, 2], gaps: [6, 12, 24, 40], study_frames: 6, curtain_frames: 2, reveal_spacing: 2}
    """)


def write(tmp_path, text, name="task.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_builtin_tasks_have_both_tiers(registry):
    assert set(registry.names()) >= {"occlusion-recall", "scene-retrieval", "scene-reasoning"}
    for name in registry.names():
        tiers = registry.entry(name).tiers
        assert {"smoke", "standard"} <= set(tiers)
        for spec in tiers.values():
            d = spec.to_dict()
            for key in (
                "family",
                "params",
                "frames",
                "resolution",
                "action_space",
                "context_frames",
                "predict_frames",
                "gap_bins",
                "episodes",
                "seed",
                "generator_version",
                "protocols",
            ):
                assert key in d


def test_user_task_loads_and_hash_is_stable(tmp_path):
    spec = load_task_file(write(tmp_path, GOOD))["smoke"]
    assert spec.name == "my-task" and spec.params.slots == (2, 2)
    again = load_task_file(write(tmp_path, GOOD, "again.yaml"))["smoke"]
    assert spec.hash() == again.hash()
    changed = load_task_file(write(tmp_path, GOOD.replace("seed: 7", "seed: 8"), "c.yaml"))["smoke"]
    assert changed.hash() != spec.hash()
    # the description is documentation, not part of the hash
    doc = load_task_file(write(tmp_path, GOOD.replace("a user task", "other words"), "d.yaml"))["smoke"]
    assert doc.hash() == spec.hash()


@pytest.mark.parametrize(
    "edit, field, words",
    [
        (("seed: 7", "sead: 7"), "common.sead", "did you mean 'seed'"),
        (("family: occlusion_recall", "family: oclusion_recall"), "family", "did you mean 'occlusion_recall'"),
        (("frames: 80", "frames: eighty"), "tiers.smoke.frames", "must be an integer"),
        (("episodes: 2", "episodes: 0"), "tiers.smoke.episodes", "must be >= 1"),
        (
            ("study_frames: 6", "study_frames: 6, curtian_frames: 2"),
            "tiers.smoke.params.curtian_frames",
            "did you mean 'curtain_frames'",
        ),
        (("curtain_frames: 2", "curtain_frames: 0"), "tiers.smoke.params.curtain_frames", "must be >= 1"),
        (("slots: [2, 2]", "slots: [2, 2, 2]"), "tiers.smoke.params", "slots must be [rows, cols]"),
        (("gaps: [6, 12, 24, 40]", "gaps: [6, 12, 24, 400]"), "tiers.smoke", "too short for the gap-400 trial"),
        (("generator_version: 2", "generator_version: 9"), "generator_version", "version 9"),
        (("resolution: [32, 32]", "resolution: 32"), "tiers.smoke.resolution", "must be [height, width]"),
        (("context_frames: 64", "context_frames: 80"), "tiers.smoke.context_frames", "must be <= 79"),
        (("name: my-task", "name: My Task"), "name", "lower-case"),
    ],
)
def test_bad_yaml_names_file_and_field(tmp_path, edit, field, words):
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(TaskSpecError) as e:
        load_task_file(path)
    assert e.value.field == field
    assert words.lower() in str(e.value).lower()
    assert str(path) in str(e.value)


def test_yaml_syntax_error_and_non_mapping(tmp_path):
    with pytest.raises(TaskSpecError, match="invalid YAML"):
        load_task_file(write(tmp_path, "name: [unclosed"))
    with pytest.raises(TaskSpecError, match="must be a YAML mapping"):
        load_task_file(write(tmp_path, "- a\n- b\n"))


def test_standard_tier_requirements(tmp_path):
    text = GOOD.replace("smoke:", "standard:")
    with pytest.raises(TaskSpecError, match="at least 512 frames"):
        load_task_file(write(tmp_path, text))


def test_duplicate_task_names_rejected(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(TaskSpecError, match="already defined"):
        TaskRegistry(extra_dirs=[tmp_path], builtin=False, entry_points=False)


def test_registry_selectors(registry, tmp_path):
    from memorybench.generators import get_generator

    skipped = []
    chosen = {s.key for s in registry.select("smoke", skipped=skipped)}
    assert chosen | {k for k, _ in skipped} == {f"{n}@smoke" for n in registry.names()}
    for key, reason in skipped:  # only tasks whose optional extra is missing are left out, with a reason
        spec = registry.get(*key.split("@"))
        assert get_generator(spec.family).unavailable_reason() == reason and "pip install" in reason
    assert [s.key for s in registry.select("occlusion-recall@smoke,occlusion-recall@smoke")] == [
        "occlusion-recall@smoke"
    ]
    assert registry.select("scene-retrieval")[0].tier == "standard"
    with pytest.raises(UnknownNameError, match="(?i)did you mean 'scene-retrieval'"):
        registry.select("scene-retreival")
    user = TaskRegistry(extra_dirs=[write(tmp_path, GOOD).parent])
    assert "my-task" in user.names() and "occlusion-recall" in user.names()


def test_cli_exit_code_2_on_broken_task_file(tmp_path, capsys):
    write(tmp_path, GOOD.replace("family: occlusion_recall", "family: nope"))
    assert main(["tasks", "list", "--tasks-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "task.yaml" in err and "family" in err and "unknown generator family 'nope'" in err


def test_tasks_dir_from_environment(tmp_path, monkeypatch, capsys):
    write(tmp_path, GOOD)
    monkeypatch.setenv("MEMORYBENCH_TASKS_DIR", str(tmp_path))
    assert main(["tasks", "list", "--json"]) == 0
    assert "my-task" in capsys.readouterr().out
