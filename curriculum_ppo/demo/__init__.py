"""Demonstrations: the HDF5 file format, reading/writing, recording, verifying, importing."""

from curriculum_ppo.demo.store import Demo, DemoBuilder, load_demo, save_demo

__all__ = ["Demo", "DemoBuilder", "load_demo", "save_demo"]
