#!/usr/bin/env python
"""How much timing slack does a demo start leave? Probe one-step deviations on the real emulator.

From each start frame, the agent's env (frameskip 4, the training settings)
plays ``--base`` every step except one step k, where it plays ``--try``;
the probe reports every (action, k) that is still alive ``--until`` demo
frames later, and whether holding ``--base`` alone survives. This explains a
curriculum that stalls: from the bundled demo's starts before frame 190 the
rolling skull on the bottom floor is passed by exactly one of them (LEFTFIRE
at one single agent step), so a near-deterministic policy almost never finds
it by chance.

With ``--checkpoint`` it also asks a trained policy, for each start whose
survival hangs on one step k: after k steps of ``--base`` (the states the
agent sees on its way to the skull), how much probability does the policy put
on the surviving actions? A stalled curriculum shows ~0 there.

Usage: python scripts/probe_jump_timing.py [--first 155] [--last 203] [--every 4]
       [--base LEFT] [--try LEFTFIRE FIRE UPLEFTFIRE DOWNLEFTFIRE] [--until 246]
       [--checkpoint RUN/checkpoints/latest.pt]
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from bench_common import default_output  # scripts/ is on sys.path when a script runs
from curriculum_ppo.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demos" / "MontezumaRevenge-room1.h5"


def survives(env, start: int, steps: int, base: int, deviation: int | None = None, at: int = -1) -> bool:
    env.reset(options={"start_frame": start})
    for k in range(steps):
        _, _, terminated, _, _ = env.step(deviation if k == at else base)
        if terminated:
            return False
    return True


def policy_mass_at(env, policy, start: int, k: int, base: int, actions: list[int]) -> float:
    """Probability the policy gives ``actions`` in the state reached by playing ``base`` k times from ``start``."""
    import numpy as np
    import torch

    obs, _ = env.reset(options={"start_frame": start})
    hidden = policy.initial_state(1)
    for step in range(k + 1):
        with torch.no_grad():
            logits, _, hidden = policy(torch.as_tensor(np.asarray(obs))[None], hidden,
                                       torch.tensor([step == 0]))
        if step == k:
            return float(torch.softmax(logits.float(), -1)[0, actions].sum())
        obs, _, terminated, _, _ = env.step(base)
        if terminated:
            return float("nan")
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default=str(DEMO))
    parser.add_argument("--first", type=int, default=155)
    parser.add_argument("--last", type=int, default=203)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--base", default="LEFT")
    parser.add_argument("--try", dest="tries", nargs="+", default=["LEFTFIRE", "FIRE", "UPLEFTFIRE", "DOWNLEFTFIRE"])
    parser.add_argument("--until", type=int, default=246, help="demo frame the agent must still be alive at")
    parser.add_argument("--checkpoint", help="also report a trained policy's probability of the surviving actions")
    parser.add_argument("--json", default=None,
                        help="default: runs/bench/probe_jump_timing/probe_jump_timing.json (probe_jump_policy.json "
                             "with --checkpoint); the committed ones in scripts/results/ change only when named here")
    args = parser.parse_args()
    if args.json is None:
        name = "probe_jump_policy.json" if args.checkpoint else "probe_jump_timing.json"
        args.json = str(default_output("probe_jump_timing", name))

    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.envs.atari import AtariConfig, AtariEnv
    from curriculum_ppo.episode_rules import EpisodeRulesConfig

    demo = load_demo(args.demo)
    names = list(demo.attrs["action_set"])
    base = names.index(args.base)
    tries = [names.index(t) for t in args.tries]
    # No lag cut: only life loss ends the probe's episodes.
    env = AtariEnv(demo=demo, config=AtariConfig(start_cache_size=0), rules=EpisodeRulesConfig(lag_allowance=10**6))
    policy = None
    if args.checkpoint:
        import torch

        from curriculum_ppo.evaluate import load_for_eval

        policy = load_for_eval(args.checkpoint, torch.device("cpu")).policy
    rows = []
    for start in range(args.first, args.last + 1, args.every):
        steps = max(1, (args.until - start) // env.config.frameskip)
        alive = [(names[a], k) for a in tries for k in range(steps) if survives(env, start, steps, base, a, k)]
        row = {"start_frame": start, "steps": steps, "base_alone_survives": survives(env, start, steps, base),
               "surviving_deviations": alive}
        at = {k for _, k in alive}
        if policy is not None and not row["base_alone_survives"] and len(at) == 1:
            k = at.pop()
            row["decisive_step"] = k
            row["policy_mass_on_surviving_actions"] = policy_mass_at(
                env, policy, start, k, base, sorted({names.index(a) for a, _ in alive}))
        rows.append(row)
    print(f"base action {args.base}; alive at demo frame {args.until}?")
    print(f"{'start':>5} {'steps':>5} {'base alone':>10}  {'policy mass':>11}  "
          f"surviving one-step deviations (action@step)")
    for r in rows:
        dev = ", ".join(f"{a}@{k}" for a, k in r["surviving_deviations"][:8])
        more = len(r["surviving_deviations"]) - 8
        mass = r.get("policy_mass_on_surviving_actions")
        print(f"{r['start_frame']:>5} {r['steps']:>5} {str(r['base_alone_survives']):>10}  "
              f"{'' if mass is None else f'{mass:.2g}':>11}  {dev}{f' (+{more} more)' if more > 0 else ''}")
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "demo": str(Path(args.demo).name),
           "base": args.base, "tries": args.tries, "until": args.until, "checkpoint": args.checkpoint,
           "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(args.json), json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    from curriculum_ppo.errors import UserError

    try:
        main()
    except UserError as exc:  # a missing demo or checkpoint: one line, not a traceback
        raise SystemExit(f"probe_jump_timing: error: {exc}") from None
