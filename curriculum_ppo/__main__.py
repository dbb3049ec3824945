"""Allow ``python -m curriculum_ppo`` (and ``torchrun -m curriculum_ppo``)."""

from curriculum_ppo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
