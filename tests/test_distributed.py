"""Two learner processes on CPU (gloo) launched by torchrun: weights and curriculum stay in lockstep."""

import gc
import json
import os
import subprocess
import sys

import torch

from curriculum_ppo.run_lock import RunLock
from curriculum_ppo.training.run_dir import load_checkpoint, rank_state_digest

DEMO = "demos/MontezumaRevenge-room1.h5"
FAULTHANDLER = {**os.environ, "PYTHONFAULTHANDLER": "1"}  # a rank that dies of a signal prints its threads' stacks


def test_two_ranks_with_gloo_keep_identical_weights_and_curriculum(tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "curriculum_ppo", "train", "--demo", DEMO, "--run-dir", str(run_dir), "--device", "cpu",
           "--frames", "2048", "--num-envs", "2", "--workers", "1", "--steps", "32", "--minibatches", "2",
           "--min-episodes", "4", "--status-every", "0", "--threads", "1",
           "--demo-bc-coef", "0.1"]  # the cloning term too: each rank draws its own demo frames
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=FAULTHANDLER)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 ranks agree on weights and curriculum" in result.stdout
    reports = [json.loads((run_dir / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["param_sha256"] == reports[1]["param_sha256"]
    assert reports[0]["curriculum"] == reports[1]["curriculum"]
    # Frames are counted over both ranks: 2 ranks x 2 envs x 32 steps x frameskip 4 per update.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["frames"] for r in rows] == [512 * (i + 1) for i in range(4)]
    assert all(r["bc_loss"] > 0 for r in rows)
    assert reports[0]["updates"] == reports[1]["updates"] == 4
    # Rank 0 writes the checkpoint; rank 1 its own random streams and episode windows beside it.
    saved = {0: load_checkpoint(run_dir / "checkpoints" / "latest.pt"),
             1: torch.load(run_dir / "checkpoints" / "rank1.pt", weights_only=True)}
    assert saved[1]["updates"] == 4 and saved[1]["world_size"] == 2
    assert rank_state_digest(saved[0]) != rank_state_digest(saved[1])  # the ranks' streams differ

    # While another process holds the run dir, a torchrun --resume is refused by rank 0, naming the holder.
    resume = [*cmd[:cmd.index("train") + 1], "--run-dir", str(run_dir), "--resume", "--frames", "2560",
              "--status-every", "0"]
    with RunLock(run_dir):
        refused = subprocess.run(resume, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0
    assert f"is in use by another training (pid {os.getpid()})" in refused.stderr
    assert len(_rows(run_dir)) == 4 and _rows(run_dir) == rows

    # Resumed by two ranks, each rank gets its own saved streams back.
    result = subprocess.run(resume, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((run_dir / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["resumed_rng"] == {"source": "checkpoints/latest.pt", "sha256": rank_state_digest(saved[0])}
    assert reports[1]["resumed_rng"] == {"source": "checkpoints/rank1.pt", "sha256": rank_state_digest(saved[1])}
    assert [r["updates"] for r in _rows(run_dir)] == [1, 2, 3, 4, 5]

    # And a single process can resume it: 1 rank, 256 frames per update.
    resumed = subprocess.run([sys.executable, "-m", "curriculum_ppo", "train", "--run-dir", str(run_dir), "--resume",
                              "--frames", "3072", "--status-every", "0"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = _rows(run_dir)
    assert rows[-1]["frames"] == 2560 + 512 and [r["updates"] for r in rows] == list(range(1, 8))


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_command_frees_the_trainer_before_it_ends_the_process_group(tmp_path):
    """The Trainer sits in reference cycles; left to the collector, its DDP module and the process group it
    holds would be freed during interpreter shutdown, where gloo can abort the process (seen as a SIGABRT of
    rank 0 after "done"). ``train`` collects them itself, before it ends the process group."""
    from curriculum_ppo.cli import build_parser
    from curriculum_ppo.training.loop import Trainer

    args = build_parser().parse_args(["train", "--demo", DEMO, "--run-dir", str(tmp_path / "run"), "--device", "cpu",
                                      "--frames", "256", "--num-envs", "2", "--workers", "0", "--steps", "32",
                                      "--minibatches", "2", "--status-every", "0"])
    gc.collect()
    gc.disable()  # only the command's own collection may free the Trainer
    try:
        assert args.func(args) == 0
        alive = [o for o in gc.get_objects() if type(o) is Trainer]  # type(): isinstance() wakes deprecated proxies
    finally:
        gc.enable()
    assert alive == []
