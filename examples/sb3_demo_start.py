"""Stable-Baselines3's PPO on our demo-start env: a few thousand steps from a fixed late demo start.

    pip install -e '.[sb3]'
    python examples/sb3_demo_start.py [--steps 4096] [--start-frame 600]

From demo frame 600 of the bundled Montezuma's Revenge room-1 demo, the door (+300) is 35 frames
away; the script prints how often SB3's episodes tie the demo there (``info["demo"]["success"]``)
before and after training. Any Gymnasium algorithm can use the env the same way.
"""

import argparse
from pathlib import Path

import gymnasium
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

import curriculum_ppo  # noqa: F401  (registers DemoStart-v0; gymnasium.make("curriculum_ppo:...") does it too)

DEMO = Path(__file__).resolve().parent.parent / "demos" / "MontezumaRevenge-room1.h5"


class SuccessCounter(BaseCallback):
    """Counts finished episodes and how many tied the demo."""

    def __init__(self):
        super().__init__()
        self.episodes = self.successes = 0

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info and "demo" in info:
                self.episodes += 1
                self.successes += bool(info["demo"]["success"])
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4096)
    parser.add_argument("--start-frame", type=int, default=600)
    parser.add_argument("--demo", default=str(DEMO))
    args = parser.parse_args()

    env = gymnasium.make("curriculum_ppo:DemoStart-v0", demo=args.demo, start_frame=args.start_frame)
    model = PPO("CnnPolicy", env, n_steps=min(256, args.steps), batch_size=64, n_epochs=4, learning_rate=2.5e-4, seed=0, verbose=0)
    counter = SuccessCounter()
    model.learn(total_timesteps=args.steps, callback=counter)
    print(f"SB3 PPO, {args.steps} steps from demo frame {args.start_frame}: "
          f"{counter.successes} of {counter.episodes} episodes tied the demo")


if __name__ == "__main__":
    main()
