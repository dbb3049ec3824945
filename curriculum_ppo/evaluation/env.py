"""The environment side of an evaluation: an Atari env that plays one job per episode.

The worker pool knows no evaluation: each env learns the job (protocol, episode seed, start) of
its next episode from its reset options, the pool's ``set_options`` channel, so the same env
plays any protocol and every episode is reproducible whichever env plays it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IDLE = {"job": None}
"""Reset options of an env with no episode left to play: it stands still until the evaluation ends."""


@dataclass
class EvalEnvFactory:
    """Builds the evaluation's envs (picklable, for the worker processes); see :class:`EvalEnv`.

    ``game``, ``demo_path``, ``atari`` and ``rules`` make the Atari env (registry kind ``atari``);
    ``protocol_configs`` maps each protocol to its ``{"atari": AtariConfig fields, "epsilon": p}``.
    """

    game: str | None = None
    demo_path: str | None = None
    atari: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)
    protocol_configs: dict = field(default_factory=dict)

    def __call__(self, seed: int) -> "EvalEnv":
        return EvalEnv(self, seed)


class EvalEnv:
    """An Atari env that plays one evaluation job per episode, named by its reset options.

    ``reset(options={"job": k, "protocol": p, "seed": s, "start_frame": t})`` (see
    :meth:`curriculum_ppo.evaluation.plan.EvalPlan.options`) switches the env to protocol ``p`` and
    resets it with the episode's seed ``s``, so every episode is reproducible on its own, whichever
    env plays it; its summary names the job. :data:`IDLE` leaves the env standing still.
    """

    def __init__(self, factory: EvalEnvFactory, seed: int):
        from curriculum_ppo.envs.atari import AtariConfig
        from curriculum_ppo.envs.registry import make_env

        self.inner = make_env("atari", seed, game=factory.game, demo_path=factory.demo_path, atari=factory.atari,
                              rules=factory.rules)
        self.observation_space = self.inner.observation_space
        self.action_space = self.inner.action_space
        self.num_actions = int(self.action_space.n)
        self.configs = {name: (AtariConfig(**c["atari"]), float(c["epsilon"]))
                        for name, c in factory.protocol_configs.items()}
        self.job: int | None = None
        self.epsilon = 0.0
        self.rng = np.random.default_rng(0)
        self._idle_obs = np.zeros(self.observation_space.shape, np.uint8)

    def reset(self, *, seed=None, options=None):
        options = options or IDLE
        self.job = options.get("job")
        if self.job is None:
            return self._idle_obs, {"warmup": False}
        self.inner.config, self.epsilon = self.configs[options["protocol"]]
        episode_seed = int(options["seed"])
        self.rng = np.random.default_rng([episode_seed, 1])  # epsilon draws, independent of the env's own RNG
        return self.inner.reset(seed=episode_seed, options={"start_frame": options.get("start_frame")})

    def step(self, action):
        if self.job is None:
            return self._idle_obs, 0.0, False, False, {}
        if self.epsilon > 0 and self.rng.random() < self.epsilon:
            action = int(self.rng.integers(self.num_actions))
        obs, reward, terminated, truncated, info = self.inner.step(int(action))
        if "episode" in info:
            info["episode"]["job"] = self.job
        return obs, reward, terminated, truncated, info

    def render(self):
        return self.inner.render()

    def close(self):
        self.inner.close()
