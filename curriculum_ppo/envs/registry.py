"""The env registry: the one place where env kinds are named.

A kind is a name and two functions that take the same keyword arguments:

* ``make(seed, **kwargs) -> env``: one Gymnasium env (``reset(options={"start_frame": t})``
  starts it at demo frame ``t``, ``None`` at the real start);
* ``demo_info(**kwargs) -> dict``: what training needs to know about the kind's demo before any
  env exists: ``length`` (0 without a demo), ``reward_frames``, ``total_return`` and ``game``;
  Atari demos add ``rom_md5`` and ``unreachable`` (the one-line warning of
  :func:`~curriculum_ppo.episode_rules.unreachable_message`, or ``None``).

Functions are named as ``"module:attribute"`` and imported when first used, so that naming a
kind imports nothing (a worker process imports only the env it builds). A new env kind is one
entry in :data:`KINDS`.

:class:`EnvFactory` is what the worker pools take: a picklable kind plus keyword arguments,
called with a seed in each worker process.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

from curriculum_ppo.errors import UserError


@dataclass(frozen=True)
class EnvKind:
    make: str
    """``"module:function"``: ``function(seed, **kwargs)`` builds one env."""
    demo_info: str
    """``"module:function"``: ``function(**kwargs)`` describes the demo (see the module doc)."""


KINDS: dict[str, EnvKind] = {
    "atari": EnvKind(make="curriculum_ppo.envs.registry:make_atari_env",
                     demo_info="curriculum_ppo.envs.registry:atari_demo_info"),
    "toy": EnvKind(make="curriculum_ppo.envs.toy:make_toy_env", demo_info="curriculum_ppo.envs.toy:toy_demo_info"),
}


def _kind(kind: str) -> EnvKind:
    try:
        return KINDS[kind]
    except KeyError:
        raise UserError(f"unknown env kind '{kind}'; choose from {', '.join(KINDS)}") from None


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def make_env(kind: str, seed: int, **kwargs):
    """One env of ``kind`` seeded with ``seed``."""
    return _load(_kind(kind).make)(seed=seed, **kwargs)


def demo_info(kind: str, **kwargs) -> dict:
    """What training needs to know about the demo of ``kind`` built with ``kwargs`` (see the module doc)."""
    return _load(_kind(kind).demo_info)(**kwargs)


class EnvFactory:
    """``EnvFactory(kind, **kwargs)(seed)`` builds ``make_env(kind, seed, **kwargs)``; picklable for worker processes.

    The kind and the keyword names are checked here, in the process that builds the factory,
    so that a mistake is not first seen in a worker process.
    """

    def __init__(self, kind: str, **kwargs):
        make = _load(_kind(kind).make)
        try:
            inspect.signature(make).bind(seed=0, **kwargs)
        except TypeError as exc:
            raise TypeError(f"env kind '{kind}': {exc}") from None
        self.kind, self.kwargs = kind, dict(kwargs)

    def __call__(self, seed: int):
        return make_env(self.kind, seed, **self.kwargs)

    def demo_info(self) -> dict:
        return demo_info(self.kind, **self.kwargs)

    def __eq__(self, other) -> bool:
        return isinstance(other, EnvFactory) and (self.kind, self.kwargs) == (other.kind, other.kwargs)

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"EnvFactory({self.kind!r}{args})"


# -- the Atari kind -----------------------------------------------------------------------
def make_atari_env(seed: int, game: str | None = None, demo_path: str | None = None, atari: dict | None = None,
                   rules: dict | None = None):
    """An :class:`~curriculum_ppo.envs.atari.AtariEnv` of ``game``, or of the demo's game bound to the demo.

    ``atari`` and ``rules`` are :class:`~curriculum_ppo.envs.atari.AtariConfig` and
    :class:`~curriculum_ppo.episode_rules.EpisodeRulesConfig` fields. The demo is the machine's one
    read-only, memory-mapped copy (:func:`~curriculum_ppo.demo.shared.open_shared_demo`), whatever
    the number of envs.
    """
    from curriculum_ppo.demo.shared import open_shared_demo
    from curriculum_ppo.envs.atari import AtariConfig, AtariEnv
    from curriculum_ppo.episode_rules import EpisodeRulesConfig

    demo = open_shared_demo(demo_path) if demo_path else None
    return AtariEnv(game=game, demo=demo, config=AtariConfig(**(atari or {})),
                    rules=EpisodeRulesConfig(**(rules or {})), seed=seed)


def atari_demo_info(game: str | None = None, demo_path: str | None = None, atari: dict | None = None,
                    rules: dict | None = None) -> dict:
    """The demo's length, reward frames (the frame after each reward), return, game, ROM digest and
    unreachable-start warning; without a demo, length 0 and ``game`` as given.

    Reading the demo here validates the file once and builds the machine's shared copy, before any
    env (or worker process) opens it.
    """
    if demo_path is None and game is None:
        raise UserError("give --demo FILE.h5 (or --game to train without a demo)")
    if demo_path is None:
        return {"length": 0, "reward_frames": [], "total_return": None, "game": game}
    from curriculum_ppo.demo.shared import open_shared_demo
    from curriculum_ppo.emulator import resolve_game
    from curriculum_ppo.episode_rules import EpisodeRulesConfig, unreachable_message

    demo = open_shared_demo(demo_path)
    if game is not None and resolve_game(game) != demo.game:
        raise UserError(f"--game {game} does not match the demo, which is a {demo.game} demo")
    return {"length": len(demo), "reward_frames": [t + 1 for t, _ in demo.reward_events()],
            "total_return": demo.total_return, "game": demo.game, "rom_md5": demo.attrs.get("rom_md5"),
            "unreachable": unreachable_message(demo.cumulative_return, EpisodeRulesConfig(**(rules or {})))}
