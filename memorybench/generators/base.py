"""The generator contract: a task family renders episode ``i`` of a ``TaskSpec``, deterministically.

Determinism: episode ``i`` depends only on ``(spec, i)``: its random stream is
``numpy.random.default_rng([spec.seed, i])``, so episodes come out byte-identical whatever the
number of worker processes or the order they are made in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from ..episode import Episode
    from ..spec import ActionSpace, TaskSpec


class Generator(ABC):
    #: the family name used in task files
    family: ClassVar[str]
    #: bumped whenever the same spec would render different episodes
    version: ClassVar[int]
    #: a dataclass of the family's parameters (fields built with ``memorybench.spec.param``)
    Params: ClassVar[type]
    #: whether ``generate`` fills ``Episode.content_ids`` (procedural worlds do; simulators and
    #: recorded episodes do not, and the perfect-memory reference then falls back to poses)
    has_content_ids: ClassVar[bool] = True
    #: protocols a task of this family gets when its file does not list them
    default_protocols: ClassVar[tuple[str, ...]] = ("rollout", "teacher-forced")
    #: whether ``recall`` checks its items for false recall (content painted in the frame before it
    #: becomes visible: ``memorybench.recall``). Meaningful where the frame before shows a
    #: distinct, visible state that no memory is needed for (a closed curtain), not where content
    #: scrolls in (the check would then void chance hits of constant predictions).
    premature_check: ClassVar[bool] = False

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.params = spec.params

    @classmethod
    @abstractmethod
    def action_space(cls, params) -> ActionSpace:
        """The action space the family's episodes use, given its parameters."""

    @classmethod
    @abstractmethod
    def pose_fields(cls, params) -> tuple[str, ...]:
        """Names of the columns of ``Episode.poses``."""

    @classmethod  # noqa: B027 - an optional hook: no checks by default
    def check(cls, spec: TaskSpec) -> None:
        """Cross-field checks of a resolved spec; raise ``ValueError`` with a clear message."""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this family cannot generate on this machine (a missing optional extra), or None."""
        return None

    @classmethod
    def describe_gaps(cls, spec: TaskSpec) -> str:
        """A short description of the memory gaps a task tests (for ``tasks list``)."""
        return f"bins {spec.gap_bins[0]}..{spec.gap_bins[-1]}"

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.spec.seed, index])

    @abstractmethod
    def generate(self, index: int) -> Episode:
        """Render episode ``index`` with its memory metadata (and ``content_ids``), and its memory
        items (``Episode.items``) if the family defines identification tests."""

    # -- memory items (the headline ``recall`` metric, ``memorybench.recall``) --------------------
    @classmethod
    def num_candidates(cls, spec: TaskSpec) -> int | None:
        """How many candidates each memory item is identified among (None: the family has no items)."""
        return None

    def item_candidates(self, episode: Episode, i: int) -> np.ndarray:
        """uint8 ``[num_candidates, P, 3]``: item ``i``'s ``P`` pixels as each candidate would show
        them (candidate ``episode.items.truth[i]`` is what the frame shows). Deterministic, from the
        stored episode alone (its frames, poses, items and their ``extra`` arrays)."""
        raise NotImplementedError(f"family '{self.family}' defines no memory items")
