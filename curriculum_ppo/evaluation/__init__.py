"""Evaluate a trained checkpoint under the standard Atari protocols (``curriculum-ppo evaluate``).

Protocols (each one is a row of the result table; several can run at once):

* ``plain``   -- the deterministic game start, no perturbation.
* ``noops``   -- 1..``noop_max`` (30) random no-ops after the reset.
* ``sticky``  -- every emulator frame repeats the previous action with
  probability ``sticky`` (0.25, the ALE v5 / Machado et al. 2018 standard).
* ``epsilon`` -- the agent's action is replaced by a uniformly random one with
  probability ``epsilon`` (0.01).

Episodes play until game over (losing a life does *not* end them) or
``max_frames`` emulator frames (108,000 = 30 minutes); the score is the raw game
score, never clipped. The agent *samples* from its policy, as during training
(``greedy=True`` takes the most likely action instead). A recurrent policy's
GRU state is zeroed at every episode start.

With a demo start (``start_frame``) episodes begin at that demo frame and end as
the curriculum would end them during training: the checkpoint's episode rules
(success = tie the demo's return from that frame; lagging episodes are cut) and
its life-loss setting. The table then also reports the success rate.

Reproducibility: every episode has its own seed (``seeds`` in the JSON), which
fixes its no-op count, sticky-action draws and epsilon draws. Each protocol
uses the same episode seeds, so rows differ only by the protocol. The actions
of the best episode are kept, and the video is made by replaying them from the
same seed in a single environment, so no screen has to be stored during the
evaluation.

Parallelism: episodes run in ``envs`` environments stepped as one batch by the
env worker pool (:mod:`curriculum_ppo.vec`; ``workers=0`` steps them in this
process), the policy runs once per step on the whole batch. Each env learns the
job (protocol, episode seed, start) of its next episode from its reset options,
the pool's ``set_options`` channel (see :class:`~.env.EvalEnv`).

The modules, one job each:

* :mod:`.protocols` -- the settings, their validation and the protocol rules (pure);
* :mod:`.plan` -- the jobs of an evaluation and the envs' factory (pure);
* :mod:`.env` -- the env that plays one job per episode, named by its reset options;
* :mod:`.checkpoint` -- reading a checkpoint for evaluation, and its ROM check;
* :mod:`.start` -- where episodes start: the game start or a demo frame;
* :mod:`.runner` -- playing the jobs on the worker pool with the policy;
* :mod:`.episodes` -- the per-job results and the best episode, as they come in (pure);
* :mod:`.progress` -- the progress lines on stderr;
* :mod:`.results` -- per-protocol summaries and the result table (pure);
* :mod:`.report` -- the output paths, the printed header and the JSON report;
* :mod:`.replay_video` -- the best episode replayed into an MP4 and a contact sheet;
* :mod:`.command` -- the whole command, tying these together.

Nothing is imported here, so that importing one module does not load the others (or torch).
"""
