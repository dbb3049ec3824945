"""Training: the loop (:mod:`.loop`), rollouts (:mod:`.rollout`), the curriculum's hooks and stop rules
(:mod:`.hooks`), updates (:mod:`.updater`), logging (:mod:`.logger`) and the run directory (:mod:`.run_dir`).

Nothing is imported here, so that reading a run directory (``run_dir``) does not load the loop.
"""
