"""memory-maze: the real Memory Maze simulator (dm_control / MuJoCo), driven by a scripted agent.

Memory Maze (Pasukonis et al. 2022, ``pip install memory-maze``) is a first-person 3-D maze of
rooms and corridors. This family runs it -- an optional extra, ``pip install -e ".[mazes]"``,
rendered headless on the CPU -- and drives the agent with a scripted, seeded policy planned on the
maze layout, which the environment's extra observations give (``maze_layout``, ``agent_pos``,
``agent_dir``, ``targets_pos``).

Actions are the environment's own six discrete actions: 0 noop, 1 forward, 2 turn left, 3 turn
right, 4 forward + left, 5 forward + right (one control step = 0.25 s; a forward step moves 0.25
cells, a turn step about 18.4 degrees). Poses are the environment's ``agent_pos`` (x, y in maze
cells, the bottom-left corner of the maze at 0, 0) and ``agent_dir`` (a unit vector):
``(x, y, dir_x, dir_y)``, the layout of the Memory Maze offline datasets.

Episode structure. During the context frames the agent *explores*: it walks to far cells of the
maze (preferring cells it has not visited), along shortest paths, and every ``scan_every`` cells
it stops at the cell's centre and *looks around* (a 360-degree turn, 20 turn steps), so that every
heading at that spot is seen once. Then, in the frames the model must predict, depending on
``mode``:

* ``retrace`` (retrieval): the agent goes back along its own path, undoing the exploration: back
  through the cells in reverse order, and at each look-around spot it turns round again the other
  way. The look-around views it passes again were seen up to ``2j`` frames earlier at predicted
  frame ``C + j`` (the walking views in between face the other way: they are novel).
* ``revisit`` (reasoning): the agent travels to look-around spots of the exploration that it has
  not been near for at least ``min_revisit_age`` frames, by a route that avoids the cells it
  visited recently (so usually another route, arriving from another direction), and looks around
  there again. The answer is in no recent frame; on the way the agent passes through places it saw
  from other headings.

The memory metadata comes from the poses (``memorybench.generators.poses``): a frame is a memory
frame when the agent was within ``near_distance`` cells and ``near_angle`` degrees of the same
pose earlier (in the context, for predicted frames) but not in the last ``recent_window`` frames.
The family has no per-pixel content identities (``has_content_ids = False``): the perfect-memory
reference copies the observed frame with the closest pose.

Determinism: episode ``i`` depends only on ``(spec.seed, i)``: the environment's seed and the
policy's random choices come from ``numpy.random.default_rng([seed, i])``, and the policy is a
function of the observations. The same software stack on the same machine renders identical
bytes; another CPU or another Mesa version may render slightly different pixels (the trajectories
are the same).

The policy avoids the cell of the current target object, so the coloured border that shows the
current target's colour (``target_border``) never changes during an episode.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import heapq
import io
import logging
import math
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .. import install_hint
from ..episode import Episode
from ..errors import MemorybenchError
from ..spec import ActionSpace, param
from .base import Generator
from .poses import (
    FOILS,
    NEAR_ANGLE,
    NEAR_DISTANCE,
    check_rollout_only,
    headings_from_dirs,
    pose_item_candidates,
    pose_memory_items,
    pose_memory_metadata,
)

NOOP, FORWARD, LEFT, RIGHT, FORWARD_LEFT, FORWARD_RIGHT = range(6)
ACTION_LABELS = ("noop", "forward", "turn_left", "turn_right", "forward_left", "forward_right")
#: environment steps in one episode of each maze size (the env's time limit at 4 steps/s)
TIME_LIMIT_STEPS = {9: 1000, 11: 2000, 13: 3000, 15: 4000}
#: turn steps in one look-around (20 x ~18.4 degrees: a little more than a full turn)
SCAN_STEPS = 20
#: Debian packages for the headless renderers MuJoCo can use on a CPU-only machine
GL_PACKAGES = {"egl": "libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0", "osmesa": "libosmesa6"}


def install_message() -> str:
    """What to install for the maze tasks (the pip command fits how memorybench was installed)."""
    return (
        f"install the Memory Maze extra with `{install_hint('mazes')}` (memory-maze, dm-control, mujoco, gym) "
        f"and a headless OpenGL renderer: `apt-get install {GL_PACKAGES['egl']}` (MUJOCO_GL=egl, the default) or "
        f"`apt-get install {GL_PACKAGES['osmesa']}` (MUJOCO_GL=osmesa)"
    )


# ------------------------------------------------------------------------------------------------
# the optional simulator


def choose_gl_backend() -> str:
    """The MuJoCo rendering backend: ``$MUJOCO_GL`` if the user set it, else ``egl`` when libEGL is
    installed, else ``osmesa`` when libOSMesa is, else ``egl`` (which then fails with a clear error)."""
    user = os.environ.get("MUJOCO_GL")
    if user:
        return user
    if ctypes.util.find_library("EGL"):
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    return "egl"


class _DropAbslNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Cannot set velocity on Entity with no free joint" not in record.getMessage()


def _load_triton_first() -> None:
    """Import ``torch._dynamo`` (and with it Triton) before the first render, if torch is there.

    Mesa's renderer and Triton each load an LLVM of their own; Triton loaded *after* a maze was
    rendered crashed the process (a segfault importing ``triton/knobs.py`` when ``torch.optim.AdamW``
    first imports ``torch._dynamo``: ``memorybench train`` on maze tasks, torch 2.14 with Mesa). In
    this order both load cleanly (``tests/test_maze.py`` holds it)."""
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # noqa: BLE001 - no torch, or a torch without dynamo: nothing to order
        pass


def load_memory_maze() -> ModuleType:
    """Import ``memory_maze.tasks`` (the optional extra) with a headless renderer selected.

    Raises ``MemorybenchError`` with installation instructions when it is missing. The backend must
    be chosen before MuJoCo's rendering is first imported, so this sets ``MUJOCO_GL`` (keeping a
    value the user set) -- in every worker process, since each imports this afresh.
    """
    os.environ["MUJOCO_GL"] = choose_gl_backend()
    _load_triton_first()
    # Mesa's software rasteriser (llvmpipe) starts one thread per core in every process: at 64x64
    # they do not speed one process up, and with one worker process per core they fight (measured
    # on 2 cores: 2 workers 29 frames/s with the default, 53 with one thread each)
    os.environ.setdefault("LP_NUM_THREADS", "1")
    try:
        # memory_maze imports gym (which prints a deprecation banner) and prints a line of its own
        # when gym is missing; keep the user's terminal clean and report errors ourselves
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            from memory_maze import tasks
    except ImportError as e:
        raise MemorybenchError(
            f"the memory_maze family needs the Memory Maze simulator ({e}); {install_message()}"
        ) from None
    except Exception as e:  # noqa: BLE001 - e.g. dm_control failing to load the GL library
        raise MemorybenchError(
            f"Memory Maze could not be loaded with MUJOCO_GL={os.environ['MUJOCO_GL']}: "
            f"{type(e).__name__}: {e}; {install_message()}"
        ) from None
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _DropAbslNoise) for f in absl.filters):
        absl.addFilter(_DropAbslNoise())
    return tasks


def make_env(maze_size: int, resolution: int, seed: int) -> Any:
    """A Memory Maze environment with the global observables (layout, poses), seeded."""
    tasks = load_memory_maze()
    factory = {
        9: tasks.memory_maze_9x9,
        11: tasks.memory_maze_11x11,
        13: tasks.memory_maze_13x13,
        15: tasks.memory_maze_15x15,
    }[maze_size]
    try:
        # the border is drawn by _Agent (memory_maze's own wrapper paints the whole frame below 64x64)
        return factory(global_observables=True, camera_resolution=resolution, seed=seed, target_color_in_image=False)
    except Exception as e:  # noqa: BLE001
        raise MemorybenchError(
            f"Memory Maze could not be created with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: "
            f"{type(e).__name__}: {e}; {install_message()}"
        ) from None


# ------------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class MazeParams:
    mode: str = param("retrace", choices=("retrace", "revisit"), doc="how the agent comes back")
    maze_size: int = param(9, min=9, max=15, doc="Memory Maze size: 9, 11, 13 or 15 (cells, without outer walls)")
    scan_every: int = param(3, min=1, max=64, doc="cells walked between 360-degree look-arounds while exploring")
    min_revisit_age: int = param(
        192, min=1, max=1_000_000, doc="revisit: look-around spots the agent has not been at for this many frames"
    )
    near_distance: float = param(
        NEAR_DISTANCE, min=0.01, max=10.0, doc="two frames show the same view within this distance (cells) ..."
    )
    near_angle: float = param(NEAR_ANGLE, min=0.5, max=180.0, doc="... and this heading difference (degrees)")
    foils: int = param(
        FOILS,
        min=1,
        max=256,
        doc="memory items: other views of the episode offered beside the true frame (see memorybench.generators.poses)",
    )
    target_border: bool = param(True, doc="draw the current target's colour as a border, as Memory Maze does")

    def __post_init__(self):
        if self.maze_size not in TIME_LIMIT_STEPS:
            raise ValueError(
                f"maze_size must be one of {sorted(TIME_LIMIT_STEPS)} (the Memory Maze sizes), got {self.maze_size}"
            )


# ------------------------------------------------------------------------------------------------
# the scripted agent


class _PhaseDone(Exception):
    """The episode (or its context) has all its frames."""


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


class _Agent:
    """Drives a Memory Maze environment along planned routes and records every frame."""

    def __init__(self, env, rng: np.random.Generator, params: MazeParams):
        self.env, self.rng, self.p = env, rng, params
        ts = env.reset()
        obs = ts.observation
        self.layout = np.asarray(obs["maze_layout"]).astype(bool)  # [y, x], True = free
        self.targets = np.asarray(obs["targets_pos"], dtype=np.float64)
        self.frames = [self._image(obs)]
        self.poses = [self._pose(obs)]
        self.actions = [NOOP]
        self.rewards = 0
        self.limit = 0
        self.last_visit = np.full(self.layout.shape, -(10**9), dtype=np.int64)
        self.last_visit[self.cell[1], self.cell[0]] = 0
        self.avoid = {self._cell_of(obs["target_pos"])}

    def _image(self, obs) -> np.ndarray:
        """The camera image, with the current target's colour as a border if ``target_border``:
        as Memory Maze's ``TargetColorAsBorderWrapper`` draws it (2 pixels at 64x64), but at least
        one pixel wide at lower resolutions (where the wrapper's ``img[:, -0:]`` paints everything)."""
        img = np.array(obs["image"], dtype=np.uint8)
        if self.p.target_border:
            b = max(1, int(2 * np.sqrt(img.shape[0] // 64)))
            colour = np.asarray(obs["target_color"]) * 255 * 0.7
            img[:, :b] = colour
            img[:, -b:] = colour
            img[:b, :] = colour
            img[-b:, :] = colour
        return img

    @staticmethod
    def _pose(obs) -> np.ndarray:
        p, d = np.asarray(obs["agent_pos"], np.float64), np.asarray(obs["agent_dir"], np.float64)
        return np.array([p[0], p[1], d[0], d[1]])

    @staticmethod
    def _cell_of(xy) -> tuple[int, int]:
        return int(math.floor(xy[0])), int(math.floor(xy[1]))

    # -- state ---------------------------------------------------------------------------------
    @property
    def t(self) -> int:
        return len(self.frames) - 1

    @property
    def pos(self) -> np.ndarray:
        return self.poses[-1][:2]

    @property
    def heading(self) -> float:
        return math.atan2(self.poses[-1][3], self.poses[-1][2])

    @property
    def cell(self) -> tuple[int, int]:
        return self._cell_of(self.pos)

    def speed(self) -> float:
        return float(np.hypot(*(self.poses[-1][:2] - self.poses[-2][:2]))) if len(self.poses) > 1 else 0.0

    def step(self, action: int) -> None:
        if len(self.frames) >= self.limit:
            raise _PhaseDone
        ts = self.env.step(int(action))
        obs = ts.observation
        self.frames.append(self._image(obs))
        self.poses.append(self._pose(obs))
        self.actions.append(int(action))
        if ts.reward:
            self.rewards += 1
        x, y = self.cell
        if 0 <= y < self.layout.shape[0] and 0 <= x < self.layout.shape[1]:
            self.last_visit[y, x] = self.t
        if len(self.frames) >= self.limit:
            raise _PhaseDone

    # -- planning on the layout ------------------------------------------------------------------
    def free(self, c: tuple[int, int]) -> bool:
        x, y = c
        return 0 <= y < self.layout.shape[0] and 0 <= x < self.layout.shape[1] and bool(self.layout[y, x])

    def neighbours(self, c):
        x, y = c
        for n in ((x + 1, y), (x, y + 1), (x - 1, y), (x, y - 1)):
            if self.free(n):
                yield n

    def distances(self, start, cost=None, avoid=()) -> dict:
        """Dijkstra from ``start``: ``{cell: (distance, previous cell)}``."""
        best = {start: (0.0, None)}
        heap = [(0.0, start)]
        while heap:
            d, c = heapq.heappop(heap)
            if d > best[c][0]:
                continue
            for n in self.neighbours(c):
                if n in avoid:
                    continue
                nd = d + (1.0 if cost is None else cost(n))
                if n not in best or nd < best[n][0] - 1e-12:
                    best[n] = (nd, c)
                    heapq.heappush(heap, (nd, n))
        return best

    def route(self, start, goal, cost=None) -> list | None:
        """Cells from ``start`` (excluded) to ``goal`` (included), avoiding the target cell if possible."""
        for avoid in (self.avoid - {start, goal}, set()):
            best = self.distances(start, cost, avoid)
            if goal in best:
                path = [goal]
                while best[path[-1]][1] is not None:
                    path.append(best[path[-1]][1])
                return path[::-1][1:]
        return None

    # -- motion ----------------------------------------------------------------------------------
    def steer(self, target: np.ndarray) -> int:
        dx, dy = target - self.pos
        err = _wrap(math.atan2(dy, dx) - self.heading)
        if abs(err) > math.radians(35):
            return LEFT if err > 0 else RIGHT
        if abs(err) > math.radians(9):
            return FORWARD_LEFT if err > 0 else FORWARD_RIGHT
        return FORWARD

    def stop(self, max_steps: int = 4) -> None:
        for _ in range(max_steps):
            if self.speed() < 0.02:
                return
            self.step(NOOP)

    def walk(self, path: list, arrive: bool) -> bool:
        """Walk through the centres of ``path``'s cells; stop precisely at the last one if ``arrive``.

        Returns False if the agent got stuck (it then stands wherever it is).
        """
        prev = self.pos.copy()
        for i, c in enumerate(path):
            centre = np.array([c[0] + 0.5, c[1] + 0.5])
            last = i == len(path) - 1
            if last and arrive:
                return self.arrive(centre)
            best, stalled = np.inf, 0
            while True:
                d = float(np.hypot(*(centre - self.pos)))
                seg = centre - prev
                passed = float(np.dot(self.pos - centre, seg)) > 0 and np.hypot(*seg) > 1e-6
                if d < 0.3 or (passed and d < 0.6):
                    break
                if d < best - 0.02:
                    best, stalled = d, 0
                else:
                    stalled += 1
                    if stalled > 16:
                        return False
                self.step(self.steer(centre))
            prev = centre
        return True

    def arrive(self, point: np.ndarray, tol: float = 0.12) -> bool:
        """Come to rest within ``tol`` cells of ``point`` (as near as whole steps allow)."""
        best, stalled = np.inf, 0
        while True:  # cruise until the remaining distance is about what coasting covers
            d = float(np.hypot(*(point - self.pos)))
            if d <= 0.3:
                break
            if d < best - 0.02:
                best, stalled = d, 0
            else:
                stalled += 1
                if stalled > 16:
                    return False
            self.step(self.steer(point))
        self.stop()
        for _ in range(3):  # then single forward pulses (0.23-0.25 cells each)
            d = float(np.hypot(*(point - self.pos)))
            if d <= tol:
                break
            for _ in range(12):  # face the point
                a = self.steer(point)
                if a == FORWARD:
                    break
                self.step(LEFT if a in (LEFT, FORWARD_LEFT) else RIGHT)
            self.stop()
            if d < 0.12:
                break
            self.step(FORWARD)
            self.stop()
        return True

    def scan(self, action: int, steps: int = SCAN_STEPS, log: list | None = None) -> None:
        """Turn in place ``steps`` times (a look-around); ``log`` counts the turns made so far."""
        self.stop()
        for _ in range(steps):
            self.step(action)
            if log is not None:
                log[3] += 1

    def unstick(self) -> None:
        """After a failed walk: turn a random amount and step forward, to get off a wall."""
        for _ in range(int(self.rng.integers(2, 6))):
            self.step(LEFT if self.rng.random() < 0.5 else RIGHT)
        self.step(FORWARD)
        self.stop()


# ------------------------------------------------------------------------------------------------
# the family


class MemoryMaze(Generator):
    family = "memory_maze"
    version = 2
    Params = MazeParams
    has_content_ids = False
    default_protocols = ("rollout",)  # per-frame pose masks: see memorybench.generators.poses

    @classmethod
    def action_space(cls, params) -> ActionSpace:
        return ActionSpace(nvec=(6,), names=("move",), labels=(ACTION_LABELS,))

    @classmethod
    def pose_fields(cls, params) -> tuple[str, ...]:
        return ("x", "y", "dir_x", "dir_y")

    @classmethod
    def check(cls, spec) -> None:
        p: MazeParams = spec.params
        check_rollout_only(spec)
        h, w = spec.resolution
        if h != w:
            raise ValueError(f"Memory Maze renders square frames; resolution must be [n, n], got {h}x{w}")
        limit = TIME_LIMIT_STEPS[p.maze_size]
        if spec.frames - 1 > limit:
            raise ValueError(
                f"a {p.maze_size}x{p.maze_size} Memory Maze episode has at most {limit} steps "
                f"({limit + 1} frames); got frames {spec.frames}"
            )
        if p.mode == "retrace" and spec.predict_frames > spec.context_frames:
            raise ValueError(
                f"retrace needs predict frames ({spec.predict_frames}) <= context_frames "
                f"({spec.context_frames}): the return undoes the exploration"
            )
        if p.mode == "revisit" and p.min_revisit_age >= spec.context_frames:
            raise ValueError(
                f"min_revisit_age ({p.min_revisit_age}) must be below context_frames ({spec.context_frames})"
            )

    @classmethod
    def describe_gaps(cls, spec) -> str:
        return f"pose revisits, bins {spec.gap_bins[0]}..{spec.gap_bins[-1]}"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why the simulator cannot run here (the optional extra or a GL library is missing), or None.

        Cheap: looks the packages and libraries up without importing them.
        """
        import importlib.util
        import sys

        def found(m: str) -> bool:
            try:
                return importlib.util.find_spec(m) is not None
            except (ImportError, ValueError, AttributeError):  # e.g. sys.modules[m] is None: import blocked
                return sys.modules.get(m) is not None

        missing = [m for m in ("memory_maze", "dm_control", "mujoco", "gym") if not found(m)]
        if missing:
            return f"needs the Memory Maze extra (missing: {', '.join(missing)}); {install_message()}"
        backend = choose_gl_backend()
        lib = {"egl": "EGL", "osmesa": "OSMesa"}.get(backend)
        if lib and not ctypes.util.find_library(lib):
            return f"needs a headless OpenGL library for MUJOCO_GL={backend} (lib{lib} not found); {install_message()}"
        return None

    # ------------------------------------------------------------------------------------------
    def _explore(self, agent: _Agent, trail: list, scans: list) -> None:
        """Walk to far cells, looking around every ``scan_every`` cells, until the context is full."""
        p = self.params
        since_scan = 0
        while True:
            dist = agent.distances(agent.cell, avoid=agent.avoid - {agent.cell})
            cells = [c for c in dist if c != agent.cell]
            if not cells:  # a one-cell maze cannot happen, but never spin without stepping
                agent.scan(LEFT)
                continue
            visited = np.array([agent.last_visit[c[1], c[0]] >= 0 for c in cells])
            d = np.array([dist[c][0] for c in cells])
            score = d + 6.0 * ~visited + agent.rng.uniform(0, 4, len(cells))
            goal = cells[int(np.argmax(score))]
            path = agent.route(agent.cell, goal)
            if not path:
                agent.unstick()
                continue
            for i, c in enumerate(path):
                due = since_scan + 1 >= p.scan_every or i == len(path) - 1
                ok = agent.walk([c], arrive=due)
                if not ok:
                    agent.unstick()
                    break
                trail.append(["cell", c])
                since_scan += 1
                if due:
                    action = LEFT if agent.rng.random() < 0.5 else RIGHT
                    agent.stop()
                    event = ["scan", c, action, 0, agent.t + 1, agent.pos.copy()]
                    trail.append(event)
                    scans.append(event)
                    since_scan = 0
                    agent.scan(action, log=event)

    def _retrace(self, agent: _Agent, trail: list, scans: list) -> None:
        """Undo the exploration: back through its cells, turning back at each look-around spot."""
        events = list(reversed(trail))
        for ev in events:
            if ev[0] == "cell":
                if not agent.walk([ev[1]], arrive=False):
                    agent.unstick()
            else:
                _, c, action, done, _, where = ev
                agent.arrive(where)  # the very spot of the look-around, not just its cell
                if done:
                    agent.scan(RIGHT if action == LEFT else LEFT, done)
        self._revisit(agent, trail, scans)  # the exploration was undone: keep going back to old places

    def _revisit(self, agent: _Agent, trail: list, scans: list) -> None:
        """Go to look-around spots not visited for a long time, by routes through cells not visited
        recently, and look around there again."""
        p = self.params
        spot_pos = {}
        for ev in scans:  # each look-around cell, at the spot of its first look-around
            spot_pos.setdefault(tuple(ev[1]), ev[5])
        spots = list(spot_pos)
        spots = spots or list(dict.fromkeys(tuple(ev[1]) for ev in trail)) or [agent.cell]
        while True:
            now = agent.t
            ages = np.array([now - agent.last_visit[c[1], c[0]] for c in spots], dtype=np.float64)
            here = np.array([c == agent.cell for c in spots])
            ok = (ages >= p.min_revisit_age) & ~here
            if not ok.any():
                ok = ~here if (~here).any() else np.ones(len(spots), bool)
            idx = np.flatnonzero(ok)
            score = ages[idx] + agent.rng.uniform(0, 0.25 * p.min_revisit_age + 1, len(idx))
            goal = spots[int(idx[np.argmax(score)])]

            def cost(c, now=now):
                recent = now - agent.last_visit[c[1], c[0]] < p.min_revisit_age
                return 1.0 + (8.0 if recent else 0.0)

            path = agent.route(agent.cell, goal, cost) if goal != agent.cell else []
            if path is None:
                agent.unstick()
                continue
            if path and not agent.walk(path[:-1], arrive=False):
                agent.unstick()
                continue
            where = spot_pos.get(goal, np.array([goal[0] + 0.5, goal[1] + 0.5]))
            if not agent.arrive(where):
                agent.unstick()
                continue
            agent.scan(LEFT if agent.rng.random() < 0.5 else RIGHT)

    def generate(self, index: int) -> Episode:
        spec, p = self.spec, self.params
        T, C = spec.frames, spec.context_frames
        rng = self.rng(index)
        env_seed = int(rng.integers(0, 2**31 - 1))
        env = make_env(p.maze_size, spec.resolution[0], env_seed)
        try:
            agent = _Agent(env, rng, p)
            trail: list = []
            scans: list = []
            agent.limit = C
            try:
                self._explore(agent, trail, scans)
            except _PhaseDone:
                pass
            agent.limit = T
            try:
                if p.mode == "retrace":
                    self._retrace(agent, trail, scans)
                else:
                    self._revisit(agent, trail, scans)
            except _PhaseDone:
                pass
        finally:
            env.close()
        frames = np.stack(agent.frames)
        poses = np.stack(agent.poses).astype(np.float32)
        actions = np.array(agent.actions, dtype=np.int64)[:, None]
        headings = headings_from_dirs(poses[:, 2:])
        meta = pose_memory_metadata(
            poses[:, :2], headings, spec.resolution, spec.recent_window, C, p.near_distance, p.near_angle
        )
        items = pose_memory_items(
            frames, poses[:, :2], headings, meta, C, spec.recent_window, p.near_distance, p.near_angle, p.foils
        )
        info = {
            "mode": p.mode,
            "maze_size": p.maze_size,
            "env_seed": env_seed,
            "maze_layout": ["".join("." if v else "#" for v in row) for row in agent.layout[::-1]],
            "targets_pos": [[round(float(v), 3) for v in t] for t in agent.targets],
            "look_arounds": [
                {"cell": list(ev[1]), "pos": [round(float(v), 3) for v in ev[5]], "start": ev[4], "turns": ev[3]}
                for ev in scans
            ],
            "targets_reached": agent.rewards,
        }
        return Episode(
            task=spec.name,
            index=index,
            frames=frames,
            actions=actions,
            poses=poses,
            memory_gap=meta.memory_gap,
            memory_gap_rollout=meta.memory_gap_rollout,
            memory_mask=meta.memory_mask,
            novel_mask=meta.novel_mask,
            items=items,
            info=info,
        )

    # -- memory items (memorybench.recall): frames of the episode, see memorybench.generators.poses
    @classmethod
    def num_candidates(cls, spec) -> int:
        return 1 + spec.params.foils

    def item_candidates(self, episode: Episode, i: int) -> np.ndarray:
        """uint8 ``[1 + foils, H * W, 3]``: item ``i``'s candidate frames (the true frame first)."""
        return pose_item_candidates(episode, i)
