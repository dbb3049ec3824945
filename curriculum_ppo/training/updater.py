"""PPO updates run inline or in a background thread, and the one place that waits for them.

With ``overlap`` the next rollout is collected by a snapshot of the policy while the learner trains
on the previous one in a thread: on a machine with few cores the update dominates and the env
workers would otherwise sit idle. PPO's importance ratio uses the behaviour policy's stored
log-probabilities, so the one-update lag is accounted for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from curriculum_ppo.imitation import DemoTargets
from curriculum_ppo.ppo.learner import PPOLearner, RolloutBatch


class Updater:
    """Starts one PPO update at a time; :meth:`wait` finishes it and hands its stats to ``on_done``.

    ``on_done(stats, *context)`` runs in the caller's thread, with the ``context`` given to
    :meth:`start`. An exception raised by the update is raised again by :meth:`wait`.
    """

    def __init__(self, learner: PPOLearner, device: torch.device, overlap: bool, on_done: Callable[..., None]):
        self.learner, self.device, self.overlap, self.on_done = learner, device, overlap, on_done
        self._thread: threading.Thread | None = None
        self._result: dict = {}
        self._context: tuple = ()

    def start(self, batch: RolloutBatch, lr_scale: float, ent_scale: float, *context,
              demo: DemoTargets | None = None) -> None:
        """Update on ``batch`` (and ``demo``'s behaviour-cloning term, if given): in a thread with ``overlap``
        (call :meth:`wait` before the next), else now."""
        self._result, self._context = {}, context

        def run(result=self._result):
            try:
                result["stats"] = self.learner.update(batch.to(self.device), lr_scale=lr_scale, ent_scale=ent_scale,
                                                      demo=demo)
            except BaseException as exc:  # surfaced in the caller's thread by wait()
                result["error"] = exc
        if self.overlap:
            self._thread = threading.Thread(target=run, daemon=True)
            self._thread.start()
        else:
            run()
            self._finish()

    def wait(self) -> bool:
        """Finish the update started last, if one is running; returns whether there was one."""
        if self._thread is None:
            return False
        self._thread.join()
        self._thread = None
        self._finish()
        return True

    def _finish(self) -> None:
        if "error" in self._result:
            raise self._result["error"]
        self.on_done(self._result["stats"], *self._context)

    def abandon(self) -> None:
        """Join a running update without looking at its result: never leave a PyTorch update running in a
        thread while the process unwinds."""
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            thread.join()
