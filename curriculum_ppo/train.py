"""The training loop's former home: its names, re-exported from :mod:`curriculum_ppo.training`.

New code imports from the modules that own them: the loop from :mod:`curriculum_ppo.training.loop`,
the config from :mod:`curriculum_ppo.training.config`, checkpoints and the run directory from
:mod:`curriculum_ppo.training.run_dir`, the device from :mod:`curriculum_ppo.device` and the
network from :mod:`curriculum_ppo.ppo.policy`.
"""

from curriculum_ppo.device import GPU_LEARNER_THREADS, learner_torch_threads, pick_device
from curriculum_ppo.ppo.policy import build_policy
from curriculum_ppo.training.config import TrainConfig
from curriculum_ppo.training.loop import Trainer, env_factory
from curriculum_ppo.training.run_dir import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, RANK_STATE_FORMAT,
                                             RANK_STATE_KEYS, cut_metrics_log, cut_metrics_rows, load_checkpoint,
                                             rank_state_digest)
from curriculum_ppo.training.seeds import env_seed, learner_reseed
from curriculum_ppo.training.stats import EpisodeStats, success_by_start_table

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "GPU_LEARNER_THREADS", "RANK_STATE_FORMAT", "RANK_STATE_KEYS",
           "EpisodeStats", "TrainConfig", "Trainer", "build_policy", "cut_metrics_log", "cut_metrics_rows",
           "env_factory", "env_seed", "learner_reseed", "learner_torch_threads", "load_checkpoint", "pick_device",
           "rank_state_digest", "success_by_start_table"]
