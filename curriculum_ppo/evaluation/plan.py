"""The plan of an evaluation: one job per (protocol, episode seed), and the factory of the envs that play them.

Pure logic: :func:`build_plan` turns the settings and the checkpoint's env config into each
protocol's env config; :meth:`EvalPlan.options` names a job in the reset options an
:class:`~curriculum_ppo.evaluation.env.EvalEnv` understands.
"""

from __future__ import annotations

from dataclasses import dataclass

from curriculum_ppo.evaluation.env import IDLE, EvalEnvFactory
from curriculum_ppo.evaluation.protocols import EvalSettings, episode_seed, resolve_protocols


@dataclass
class EvalPlan:
    """The episodes of an evaluation: the envs' factory, one job per (protocol, episode seed), and their order.

    ``jobs[k] = (protocol, episode seed, start frame or None)``; ``protocols`` in table order;
    ``seeds`` the episode seeds every protocol shares.
    """

    factory: EvalEnvFactory
    jobs: list[tuple[str, int, int | None]]
    protocols: list[str]
    seeds: list[int]

    def options(self, job: int | None) -> dict:
        """The reset options that make an :class:`EvalEnv` play job ``job`` (``None``: :data:`IDLE`)."""
        if job is None:
            return dict(IDLE)
        protocol, seed, start = self.jobs[job]
        return {"job": job, "protocol": protocol, "seed": int(seed), "start_frame": start}


def build_plan(settings: EvalSettings, game: str, atari: dict, rules: dict, demo_path: str | None = None,
               start: int | None = None) -> EvalPlan:
    """The episodes of an evaluation: one job per (protocol, episode seed), and each protocol's settings.

    ``atari`` and ``rules`` are the checkpoint's; the protocols change only what they name (no-ops,
    sticky actions, epsilon) on top of them. From the game start episodes play on after a life is
    lost; from a demo frame they end as the curriculum ended them in training.
    """
    atari = {**atari, "time_limit_frames": settings.max_frames}
    rules = dict(rules)
    if start is None:
        atari["end_on_life_loss"] = False
    else:
        rules["max_episode_frames"] = settings.max_frames
    protocols = resolve_protocols(settings.protocols, demo_start=start is not None)
    seeds = [episode_seed(settings.seed, k) for k in range(settings.episodes)]
    protocol_configs = {}
    for p in protocols:
        o = settings.protocol_overrides(p)
        protocol_configs[p] = {"atari": {**atari, "noop_max": o["noop_max"], "sticky_prob": o["sticky_prob"]},
                               "epsilon": o["epsilon"]}
    factory = EvalEnvFactory(game=game, demo_path=demo_path, atari=atari, rules=rules,
                             protocol_configs=protocol_configs)
    return EvalPlan(factory=factory, jobs=[(p, s, start) for p in protocols for s in seeds], protocols=protocols,
                    seeds=seeds)
