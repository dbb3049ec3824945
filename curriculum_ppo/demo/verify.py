"""Replay a demo and check that the emulator reproduces it exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from curriculum_ppo.demo.store import Demo


@dataclass
class VerifyResult:
    ok: bool
    frames: int
    total_return: float
    first_divergence: int | None  # first action index t whose replayed reward/lives/RAM differ
    reason: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def verify_demo(demo: Demo) -> VerifyResult:
    """Replay every action from the frame-0 state; compare reward, lives and RAM.

    Also restores every saved state and checks it reproduces the recorded RAM,
    so a demo that verifies can be started from any frame.
    """
    emu = demo.make_emulator()
    n = len(demo)

    def fail(t: int, reason: str) -> VerifyResult:
        return VerifyResult(False, n, demo.total_return, t, reason)

    demo.restore_saved(emu, 0)
    if not np.array_equal(emu.ram(), demo.ram[0]):
        return fail(0, "the frame-0 state does not match the recorded RAM")
    for t in range(n):
        reward = emu.step(int(demo.actions[t]))
        if reward != float(demo.rewards[t]):
            return fail(t, f"action {t} gave reward {reward:g}, the demo recorded {float(demo.rewards[t]):g}")
        if emu.lives() != int(demo.lives[t + 1]):
            return fail(t, f"after action {t} lives are {emu.lives()}, the demo recorded {int(demo.lives[t + 1])}")
        ram = emu.ram()
        if not np.array_equal(ram, demo.ram[t + 1]):
            byte = int(np.flatnonzero(ram != demo.ram[t + 1])[0])
            return fail(t, f"after action {t} RAM byte {byte} is {ram[byte]}, the demo recorded {demo.ram[t + 1][byte]}")

    # Saved states are checked after the replay, so first_divergence is the earliest action
    # index along the demo (a wrong RAM row at a state frame f is action f-1, as for any frame).
    for k, frame in enumerate(demo.state_frames):
        demo.restore_saved(emu, k)
        if not np.array_equal(emu.ram(), demo.ram[frame]):
            return fail(int(frame), f"saved state at frame {frame} does not restore the recorded RAM")
    return VerifyResult(True, n, demo.total_return, None, None)
