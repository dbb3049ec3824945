"""The played episodes as they come in: one result per job, and the best episode with its actions (pure)."""

from __future__ import annotations

import zlib

import numpy as np


class EpisodeRecords:
    """Per-job results, the actions each env has taken in its current episode, and the best episode so far.

    The best episode is the highest score (ties: the first job); its actions are kept so that the
    video can replay it from its seed.
    """

    def __init__(self, jobs: list, num_envs: int):
        self.jobs = jobs
        self.results: list[dict | None] = [None] * len(jobs)
        self.actions: list[list[int]] = [[] for _ in range(num_envs)]
        self.best: dict | None = None
        self.done = 0

    def acted(self, playing: list, actions: np.ndarray) -> None:
        for i, job in enumerate(playing):
            if job is not None:
                self.actions[i].append(int(actions[i]))

    def finished(self, env: int, job: int | None, episode: dict) -> None:
        if job is None or int(episode.get("job", job)) != job:
            raise RuntimeError(f"env {env} finished job {episode.get('job')} but was playing {job}")
        protocol, seed, start = self.jobs[job]
        actions = np.asarray(self.actions[env], np.int16)
        result = self.results[job] = {
            "protocol": protocol, "seed": int(seed), "score": float(episode["score"]),
            "frames": int(episode["frames"]), "reason": episode.get("reason"),
            "success": bool(episode.get("success")) if start is not None else None,
            "env": env, "actions_digest": zlib.crc32(actions.tobytes()),
        }
        key = (result["score"], -job)
        if self.best is None or key > self.best["key"]:
            self.best = {"key": key, "job": job, "env": env, "actions": actions, **result}
        self.done += 1
        self.actions[env] = []
