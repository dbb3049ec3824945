"""Gymnasium environments: the Atari agent environment (with demo starts) and the toy lock."""
