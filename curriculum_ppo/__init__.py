"""curriculum_ppo: learn hard-exploration Atari games from a single demonstration.

The method (Salimans & Chen 2018) starts RL episodes from emulator states saved
along one demonstration and moves the start point backwards as the agent learns.
"""

__version__ = "0.1.0"
