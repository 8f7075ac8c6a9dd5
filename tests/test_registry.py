"""memorybench.registry: the one registry behind task families, models and metrics."""

from __future__ import annotations

import sys

import pytest

from memorybench.errors import MemorybenchError, RegistryError, UnknownNameError
from memorybench.registry import Registry, subclass_check


class Base:
    pass


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    """A throwaway module ``mbreg_things`` and a distribution declaring entry points in ``mbreg.things``."""
    (tmp_path / "mbreg_things.py").write_text(
        "from test_registry import Base\nclass Good(Base):\n    pass\nclass Other:\n    pass\nIMPORTED = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    yield tmp_path
    sys.modules.pop("mbreg_things", None)


def declare(tmp_path, lines: str, dist: str = "mbreg") -> None:
    d = tmp_path / f"{dist}-0.1.dist-info"
    d.mkdir(exist_ok=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (d / "entry_points.txt").write_text(f"[mbreg.things]\n{lines}\n")


def make(**kw) -> Registry:
    return Registry("thing", "mbreg.things", {"good": "mbreg_things:Good", "other": "mbreg_things:Other"}, **kw)


def test_entries_are_imported_only_when_loaded(pkg):
    reg = make(check=subclass_check(Base, "thing"))
    assert reg.names() == ["good", "other"] and reg.target("good") == "mbreg_things:Good"
    assert "mbreg_things" not in sys.modules
    assert reg.load("good").__name__ == "Good" and "mbreg_things" in sys.modules


def test_the_base_class_is_checked(pkg):
    reg = make(check=subclass_check(Base, "thing"))
    with pytest.raises(MemorybenchError, match=r"thing 'other' is not a subclass of test_registry.Base"):
        reg.load("other")


def test_unknown_names_get_a_did_you_mean(pkg):
    with pytest.raises(UnknownNameError, match=r"unknown thing 'godo'\. Did you mean 'good'\?"):
        make().target("godo")


def test_a_missing_module_or_attribute_is_a_clear_error(pkg):
    reg = Registry("thing", "mbreg.things", {"gone": "mbreg_missing_xyz:X", "typo": "mbreg_things:Goood"})
    with pytest.raises(MemorybenchError, match="thing 'gone': cannot import mbreg_missing_xyz"):
        reg.load("gone")
    with pytest.raises(MemorybenchError, match="mbreg_things has no attribute 'Goood'"):
        reg.load("typo")


def test_plugins_come_from_entry_points(pkg):
    declare(pkg, "third = mbreg_things:Good")
    reg = make()
    assert reg.names() == ["good", "other", "third"] and "third" in reg
    assert reg.plugins()["third"].distribution == "mbreg"


@pytest.mark.parametrize(
    ("lines", "where"),
    [("good = mbreg_things:Other", "built in, and plugin mbreg_things:Other")],
)
def test_a_name_registered_twice_is_refused_with_one_error(pkg, lines, where):
    declare(pkg, lines)
    with pytest.raises(RegistryError, match=f"thing 'good' is registered twice \\({where}\\)"):
        make().names()


def test_two_plugins_with_one_name_are_refused(pkg):
    declare(pkg, "dup = mbreg_things:Good", dist="mbreg")
    declare(pkg, "dup = mbreg_things:Other", dist="mbreg2")
    with pytest.raises(RegistryError, match="thing 'dup' is registered twice \\(plugins mbreg_things:"):
        make().names()


def test_tags_give_groups_in_registration_order(pkg):
    reg = make(tags={"other": ("b",), "good": ("a", "b")})
    assert reg.names("b") == ["good", "other"] and reg.groups(["a", "b"]) == {"a": ("good",), "b": ("good", "other")}
    assert reg.tags("good") == ("a", "b") and reg.tags("nope") == ()


def test_model_groups_and_help_derive_from_the_tags():
    from typer.testing import CliRunner

    from memorybench.cli import app
    from memorybench.models import CALIBRATION, MODEL_GROUPS, MODELS, NO_MEMORY
    from memorybench.zoo import ZOO_MODELS

    assert ZOO_MODELS == MODEL_GROUPS["zoo"] == tuple(MODELS.names("zoo")) and "lssvwm" in ZOO_MODELS
    assert CALIBRATION[0] == NO_MEMORY[0] == "copy-last" and "blur-last" in NO_MEMORY
    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "300"}).output
    assert all(m in out for m in ZOO_MODELS)


def test_run_expands_a_model_group():
    from memorybench.cli.common import _model_names
    from memorybench.models import MODEL_GROUPS

    assert _model_names("zoo") == list(MODEL_GROUPS["zoo"])
    assert _model_names("lssvwm,no-memory")[:3] == ["lssvwm", "copy-last", "context-mean-colour"]


def test_a_group_overlapping_a_name_is_refused():
    from memorybench.cli.common import _model_names

    with pytest.raises(MemorybenchError, match="names a model twice"):
        _model_names("copy-last,calibration")


def test_a_generator_must_declare_the_family_it_is_registered_under(monkeypatch):
    from memorybench import generators

    monkeypatch.setitem(generators.BUILTIN_GENERATORS, "alias", "memorybench.generators.occlusion:OcclusionRecall")
    with pytest.raises(
        RegistryError, match="registered as 'alias' but its class .* declares family = 'occlusion_recall'"
    ):
        generators.get_generator("alias")
    assert generators.get_generator("occlusion_recall").family == "occlusion_recall"


def test_no_memory_references_are_listed_as_such():
    from memorybench.models.catalog import catalog

    kinds = {r["name"]: r["kind"] for r in catalog()}
    assert kinds["blur-last"] == "no-memory" and kinds["copy-last"] == "calibration"
    assert kinds["perfect-memory"] == "reference" and kinds["lssvwm"] == "zoo"
    assert "plugin" not in kinds.values()


def test_the_oracles_of_the_validity_check_are_the_reference_models():
    from memorybench.models import MODELS
    from memorybench.validity import ORACLES

    assert sorted(ORACLES) == sorted(MODELS.names("reference")) == ["ground-truth", "perfect-memory"]


def test_train_help_lists_the_zoo_from_the_registry():
    from typer.testing import CliRunner

    from memorybench.cli import app
    from memorybench.zoo import ZOO_MODELS

    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
    assert f"Zoo model: {', '.join(ZOO_MODELS)}." in out


def test_keep_loaded_imports_once_until_the_cache_is_cleared(pkg, monkeypatch):
    import importlib

    calls = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda m, *a: calls.append(m) or real(m, *a))
    kept, fresh = make(keep_loaded=True), make()
    assert kept.load("good") is kept.load("good") and calls.count("mbreg_things") == 1
    fresh.load("good"), fresh.load("good")
    assert calls.count("mbreg_things") == 3
    kept.clear_cache()
    kept.load("good")
    assert calls.count("mbreg_things") == 4
