"""The evaluation's former home: its names, re-exported from :mod:`curriculum_ppo.evaluation`.

New code imports from the modules that own them: the settings and protocol rules from
:mod:`curriculum_ppo.evaluation.protocols`, the plan from :mod:`.evaluation.plan`, the env from
:mod:`.evaluation.env`, checkpoint loading from :mod:`.evaluation.checkpoint`, the run from
:mod:`.evaluation.runner`, the summaries from :mod:`.evaluation.results`, the video from
:mod:`.evaluation.replay_video` and the whole command from :mod:`.evaluation.command`.
"""

from curriculum_ppo.evaluation.checkpoint import LoadedCheckpoint, load_for_eval
from curriculum_ppo.evaluation.command import evaluate
from curriculum_ppo.evaluation.env import IDLE, EvalEnv, EvalEnvFactory
from curriculum_ppo.evaluation.outputs import check_writable
from curriculum_ppo.evaluation.plan import EvalPlan, build_plan
from curriculum_ppo.evaluation.protocols import PROTOCOLS, EvalSettings, episode_seed, resolve_protocols
from curriculum_ppo.evaluation.replay_video import SHEET_FRAMES, record_video
from curriculum_ppo.evaluation.results import format_table, protocol_rows, summarize
from curriculum_ppo.evaluation.runner import run_episodes

__all__ = ["IDLE", "PROTOCOLS", "SHEET_FRAMES", "EvalEnv", "EvalEnvFactory", "EvalPlan", "EvalSettings",
           "LoadedCheckpoint", "build_plan", "check_writable", "episode_seed", "evaluate", "format_table",
           "load_for_eval", "protocol_rows", "record_video", "resolve_protocols", "run_episodes", "summarize"]
