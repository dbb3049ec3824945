"""One training per run directory: a second ``train`` (fresh or ``--resume``) on a directory that a running
training holds is refused with one line naming the holder, readers stay allowed, and ``kill -9`` frees it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curriculum_ppo.errors import UserError
from curriculum_ppo.run_lock import LOCK_NAME, RunLock, read_holder

DEMO = "demos/MontezumaRevenge-room1.h5"
TINY = ["--num-envs", "2", "--workers", "0", "--steps", "32", "--status-every", "0", "--minibatches", "2"]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "curriculum_ppo", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _wait_for(predicate, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_second_training_on_a_held_run_dir_is_refused_and_kill_9_frees_it(tmp_path):
    run_dir = tmp_path / "run"
    # The first run writes no checkpoint while it runs, so the second one meets it in the window the
    # report found: an update logged and no latest.pt (without the lock, a second train started there).
    no_checkpoints = tmp_path / "no_checkpoints.json"
    no_checkpoints.write_text(json.dumps({"latest_every": 10**9, "checkpoint_every": 10**9}))
    first = subprocess.Popen([sys.executable, "-m", "curriculum_ppo", "train", "--demo", DEMO, "--run-dir",
                              str(run_dir), "--config", str(no_checkpoints), "--frames", "100000000", *TINY],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (read_holder(run_dir / LOCK_NAME, wait=0) or {}).get("pid") == first.pid
                         and len(_rows(run_dir)) >= 1), first.stderr.read() if first.poll() is not None else ""
        config = (run_dir / "config.json").read_bytes()
        for extra in (["--demo", DEMO, "--frames", "256", *TINY], ["--resume", "--minutes", "0.01"]):
            before = _rows(run_dir)
            second = cli("train", "--run-dir", run_dir, *extra)
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and f"is in use by another training (pid {first.pid})" in lines[0], lines
            assert "done" not in second.stdout
            after = _rows(run_dir)  # the first run's log goes on undisturbed: every update once, in order
            assert after[:len(before)] == before and [r["updates"] for r in after] == list(range(1, len(after) + 1))
            assert (run_dir / "config.json").read_bytes() == config
            assert not (run_dir / "checkpoints" / "latest.pt").exists()
        report = cli("inspect", run_dir)  # reading a running run stays allowed
        assert report.returncode == 0, report.stderr
        assert first.poll() is None  # still training
        # The lock is the kernel's: it goes with the process, however it ends.
        with pytest.raises(UserError, match=f"pid {first.pid}"):
            RunLock(run_dir).acquire()
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate(timeout=60)
    with RunLock(run_dir) as lock:  # a stale lock file does not block a new run
        assert lock.held and read_holder(run_dir / LOCK_NAME)["pid"] == os.getpid()
    again = cli("train", "--run-dir", run_dir, "--demo", DEMO, "--frames", "256", *TINY)  # no checkpoint: anew
    assert again.returncode == 0, again.stderr
    assert [r["updates"] for r in _rows(run_dir)] == [1]


def test_the_lock_is_exclusive_within_one_process_too_and_released_on_close(tmp_path):
    """``flock`` locks belong to open files, so two Trainers in one process exclude each other as well."""
    held = RunLock(tmp_path).acquire()
    with pytest.raises(UserError) as error:
        RunLock(tmp_path).acquire()
    assert str(error.value) == (f"{tmp_path} is in use by another training (pid {os.getpid()}); wait for it to "
                                "end or stop it, or choose another --run-dir")
    held.release()
    RunLock(tmp_path).acquire().release()
    assert not held.held


def test_a_trainer_holds_its_run_dir_until_closed_and_refuses_a_held_one(tmp_path):
    from curriculum_ppo.training.config import TrainConfig
    from curriculum_ppo.training.loop import Trainer

    config = TrainConfig(env_kind="toy", toy={"length": 3, "num_actions": 2}, arch="mlp", device="cpu",
                         num_envs=2, num_workers=0, num_steps=8, total_frames=16, status_every=1e9)
    config.ppo.num_minibatches = 1
    held = tmp_path / "held"
    held.mkdir()
    with RunLock(held):
        for resume in (False, True):
            with pytest.raises(UserError, match=f"in use by another training \\(pid {os.getpid()}\\)"):
                Trainer(config, held, resume=resume, quiet=True)
        assert sorted(p.name for p in held.iterdir()) == [LOCK_NAME]  # refused before writing anything
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    with pytest.raises(UserError, match="in use"):
        RunLock(tmp_path / "run").acquire()
    assert trainer.train() == 0  # and train() gives it back when it is done
    RunLock(tmp_path / "run").acquire().release()
    trainer = Trainer(config, tmp_path / "run", resume=True, quiet=True)
    trainer.close()
    RunLock(tmp_path / "run").acquire().release()
