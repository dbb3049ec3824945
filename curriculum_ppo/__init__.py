"""curriculum_ppo: learn hard-exploration Atari games from a single demonstration.

The method (Salimans & Chen 2018) starts RL episodes from emulator states saved
along one demonstration and moves the start point backwards as the agent learns.
"""

__version__ = "0.1.0"


def _register_gymnasium_envs() -> None:
    """``gymnasium.make("curriculum_ppo:DemoStart-v0", demo=...)`` imports this package, then finds the id.

    Gymnasium 1.x has no plugin entry points, so the id is registered on import; the env's module
    (ale-py, OpenCV) is only imported when an env is made.
    """
    import gymnasium

    if "DemoStart-v0" not in gymnasium.registry:
        gymnasium.register(id="DemoStart-v0", entry_point="curriculum_ppo.envs.demo_start:DemoStartEnv")


_register_gymnasium_envs()
