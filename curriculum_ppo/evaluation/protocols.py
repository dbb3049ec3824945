"""The evaluation's settings and the protocol rules: pure logic, no I/O.

:class:`EvalSettings` holds everything ``curriculum-ppo evaluate`` takes besides the checkpoint
and validates it; :func:`resolve_protocols` turns the requested names into the table's rows and
:func:`episode_seed` derives the episode seeds every protocol shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curriculum_ppo.errors import UserError

PROTOCOLS = ("plain", "noops", "sticky", "epsilon")


@dataclass
class EvalSettings:
    """Everything ``curriculum-ppo evaluate`` takes besides the checkpoint path."""

    episodes: int = 10
    protocols: tuple[str, ...] | None = None
    """Default: ``noops`` from the game start, ``plain`` from a demo frame; ``all`` expands to every protocol."""
    noop_max: int = 30
    sticky: float = 0.25
    epsilon: float = 0.01
    max_frames: int = 108_000
    envs: int = 8
    workers: int | None = None
    seed: int = 0
    device: str = "auto"
    greedy: bool = False
    demo: str | None = None
    start_frame: int | None = None
    threads: int | None = None
    """torch CPU threads (default: the CPU cores the env workers leave free, at least 1)."""
    progress_every: float = 10.0
    """Seconds between progress lines on stderr (a TTY gets a line refreshed in place every second)."""

    def validate(self) -> None:
        checks = [
            (self.episodes >= 1, f"--episodes must be at least 1 (got {self.episodes})"),
            (self.envs >= 1, f"--envs must be at least 1 (got {self.envs})"),
            (self.workers is None or self.workers >= 0, f"--workers must be 0 or more (got {self.workers})"),
            (self.max_frames >= 1, f"--max-frames must be positive (got {self.max_frames})"),
            (self.noop_max >= 1, f"--noop-max must be at least 1 (got {self.noop_max})"),
            (0.0 <= self.sticky < 1.0, f"--sticky must be in [0, 1) (got {self.sticky})"),
            (0.0 <= self.epsilon <= 1.0, f"--epsilon must be in [0, 1] (got {self.epsilon})"),
            (self.seed >= 0, f"--seed must be 0 or more (got {self.seed})"),
            (self.start_frame is None or self.start_frame >= 0,
             f"--start-frame must be 0 or more (got {self.start_frame})"),
            (self.threads is None or self.threads >= 1, f"--threads must be at least 1 (got {self.threads})"),
            (self.progress_every > 0, "--progress-every must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.protocols is not None and not self.protocols:
            raise UserError("give at least one --protocol")
        for name in self.protocols or ():
            if name not in PROTOCOLS and name != "all":
                raise UserError(f"unknown protocol '{name}'; choose from {', '.join(PROTOCOLS)} (or all)")

    def protocol_overrides(self, name: str) -> dict:
        """AtariConfig overrides and epsilon of one protocol."""
        return {
            "plain": {"noop_max": 0, "sticky_prob": 0.0, "epsilon": 0.0},
            "noops": {"noop_max": self.noop_max, "sticky_prob": 0.0, "epsilon": 0.0},
            "sticky": {"noop_max": 0, "sticky_prob": self.sticky, "epsilon": 0.0},
            "epsilon": {"noop_max": 0, "sticky_prob": 0.0, "epsilon": self.epsilon},
        }[name]

    def describe(self, name: str) -> str:
        return {
            "plain": "deterministic start",
            "noops": f"1-{self.noop_max} random no-ops",
            "sticky": f"sticky actions p={self.sticky:g}",
            "epsilon": f"random action p={self.epsilon:g}",
        }[name]


def resolve_protocols(names, demo_start: bool) -> list[str]:
    """Expand ``all``, apply the default, and refuse ``noops`` at demo starts (no-ops only follow a reset)."""
    if not names:
        return ["plain" if demo_start else "noops"]
    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(p for p in PROTOCOLS if not (demo_start and p == "noops"))
        elif name == "noops" and demo_start:
            raise UserError("the noops protocol does not apply to demo starts (random no-ops only follow a game "
                            "reset); use plain, sticky or epsilon")
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def episode_seed(base: int, index: int) -> int:
    """Seed of episode ``index`` (shared by all protocols), derived from ``--seed``."""
    return int(np.random.SeedSequence([base, index]).generate_state(1)[0])
