"""``DemoStart-v0``: our demo-start Atari environment for other RL libraries.

``gymnasium.make("curriculum_ppo:DemoStart-v0", demo="room1.h5")`` imports this
package (which registers the id) and builds an :class:`~curriculum_ppo.envs.atari.AtariEnv`
bound to the demo, with the same preprocessing and episode rules as our own
training. Researchers can then try demo starts with their own algorithm:

* ``reset(options={"start_frame": t})`` starts from demo frame ``t``;
  ``reset(options={"start_frame": None})`` from the real game start; without the
  option, from the ``start_frame`` given to ``make`` (default: the game start).
* ``info["demo"]`` on every step from a demo start holds the episode rules' view:
  the start frame, the target frame and score the agent must tie, and whether it
  has succeeded. A rule's cut (success plus extra frames, lagging, the cap) is a
  *truncation*; a game over (or a life lost, with ``end_on_life_loss``) is a
  termination. ``info["episode"]`` at the end says which (``reason``).

Every field of :class:`~curriculum_ppo.envs.atari.AtariConfig` and of
:class:`~curriculum_ppo.episode_rules.EpisodeRulesConfig` is a keyword of ``make``
(e.g. ``sticky_prob=0.25``, ``success_rule="demo_end"``).
"""

from __future__ import annotations

import os
from dataclasses import fields

from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.envs.atari import AtariConfig, AtariEnv
from curriculum_ppo.episode_rules import EpisodeRulesConfig
from curriculum_ppo.errors import UserError

ENV_ID = "DemoStart-v0"  # registered in curriculum_ppo/__init__.py
_ATARI_FIELDS = {f.name for f in fields(AtariConfig)}
_RULE_FIELDS = {f.name for f in fields(EpisodeRulesConfig)}


class DemoStartEnv(AtariEnv):
    """An :class:`AtariEnv` built from a demo file, for ``gymnasium.make``."""

    def __init__(self, demo: str | os.PathLike, start_frame: int | None = None, render_mode: str | None = None,
                 seed: int = 0, **settings):
        unknown = sorted(set(settings) - _ATARI_FIELDS - _RULE_FIELDS)
        if unknown:
            raise UserError(f"{ENV_ID} has no setting {', '.join(unknown)}; it takes the AtariConfig and "
                            f"EpisodeRulesConfig fields")
        loaded = load_demo(demo)
        if start_frame is not None and not 0 <= int(start_frame) <= len(loaded):
            raise UserError(f"start_frame {start_frame} is outside the demo (0..{len(loaded)})")
        config = AtariConfig(**{k: v for k, v in settings.items() if k in _ATARI_FIELDS})
        rules = EpisodeRulesConfig(**{k: v for k, v in settings.items() if k in _RULE_FIELDS})
        super().__init__(demo=loaded, config=config, rules=rules, seed=seed, render_mode=render_mode)
        self.default_start_frame = None if start_frame is None else int(start_frame)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = dict(options or {})
        options.setdefault("start_frame", self.default_start_frame)
        obs, info = super().reset(seed=seed, options=options)
        return obs, self._with_rules(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, self._with_rules(info)

    def _with_rules(self, info: dict) -> dict:
        tracker = self._tracker
        if tracker is not None:
            info["demo"] = {"start_frame": tracker.start, "target_frame": tracker.target_frame,
                            "target_score": tracker.target_score, "success": tracker.success}
        return info

