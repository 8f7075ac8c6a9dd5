"""memorybench: long-context memory benchmarks for action-conditioned video world models.

Where things live (one module per concept):

- ``memorybench.spec``       the task specification (a YAML file in ``tasks/``) and its validation
- ``memorybench.tasks``      the task registry: find, list and load task specs
- ``memorybench.generators`` the procedural episode generators, one module per family
- ``memorybench.episode``    the ``Episode`` record and the memory metadata (gaps, masks)
- ``memorybench.storage``    generated episodes on disk (a Hugging Face dataset + manifest)
- ``memorybench.preview``    contact sheets and animations of episodes
- ``memorybench.cli``        the ``memorybench`` command line
- ``memorybench.testing``    conformance checks for your own task families and model adapters
"""

__version__ = "0.1.0"

# Bump when the meaning of a stored episode or of a task spec field changes: it is part of every
# task hash, so results computed under another format are never mixed with new ones.
TASK_FORMAT_VERSION = 2


def source_checkout() -> "str | None":
    """The root of the source checkout memorybench runs from (``pip install -e .`` or PYTHONPATH),
    or ``None`` for an installed wheel."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    return str(root) if (root / "pyproject.toml").is_file() and (root / "memorybench").is_dir() else None


def install_hint(extra: str) -> str:
    """The command that installs an optional extra, for the way memorybench was installed:
    ``pip install -e ".[mazes]"`` in a source checkout, ``pip install "memorybench[mazes]"`` else."""
    import os

    root = source_checkout()
    if root is None:
        return f'pip install "memorybench[{extra}]"'
    where = "." if os.path.realpath(os.getcwd()) == os.path.realpath(root) else root
    return f'pip install -e "{where}[{extra}]"'
