"""What an evaluation reports: the printed header and table on stdout, and the JSON report's contents."""

from __future__ import annotations

from curriculum_ppo.evaluation.checkpoint import LoadedCheckpoint
from curriculum_ppo.evaluation.plan import EvalPlan
from curriculum_ppo.evaluation.protocols import EvalSettings
from curriculum_ppo.evaluation.results import format_table


def print_table(ckpt: LoadedCheckpoint, settings: EvalSettings, rows: list[dict], demo_path: str | None,
                start: int | None, stdout) -> None:
    """The checkpoint, where episodes start and end, then one table row per protocol."""
    from curriculum_ppo.emulator import display_name

    policy_mode = "greedy (argmax)" if settings.greedy else "sampled from the policy"
    print(f"{display_name(ckpt.game)}: {ckpt.path} ({ckpt.frames:,} training frames, {ckpt.updates} updates)",
          file=stdout)
    if start is not None:
        ends = "episodes end as in training (life loss, lagging, success), or"
        print(f"start: demo frame {start} of {demo_path}; {ends} at {settings.max_frames:,} frames; "
              f"actions {policy_mode}", file=stdout)
    else:
        print(f"start: game start; episodes end at game over or {settings.max_frames:,} frames; "
              f"actions {policy_mode}", file=stdout)
    print(format_table(rows, start is not None), file=stdout, flush=True)


def build_report(ckpt: LoadedCheckpoint, settings: EvalSettings, plan: EvalPlan, rows: list[dict], device,
                 demo_path: str | None, start: int | None, elapsed: float) -> dict:
    """The JSON report (``video`` is filled in once the video is written)."""
    return {
        "checkpoint": str(ckpt.path),
        "game": ckpt.game,
        "training_frames": ckpt.frames,
        "training_updates": ckpt.updates,
        "recurrent": ckpt.recurrent,
        "settings": {
            "episodes": settings.episodes, "protocols": plan.protocols, "noop_max": settings.noop_max,
            "sticky": settings.sticky, "epsilon": settings.epsilon, "max_frames": settings.max_frames,
            "envs": min(settings.envs, len(plan.jobs)), "seed": settings.seed, "greedy": settings.greedy,
            "device": str(device), "start": "game" if start is None else {"demo": demo_path, "start_frame": start},
            "end_on_life_loss": bool(plan.factory.atari["end_on_life_loss"]),
            "std": "sample standard deviation (ddof=1)",
        },
        "seeds": plan.seeds,
        "protocols": rows,
        "elapsed_s": round(elapsed, 2),
        "video": None,
    }
