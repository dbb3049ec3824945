"""Two learner processes on CPU (gloo) launched by torchrun: weights and curriculum stay in lockstep."""

import json
import subprocess
import sys

DEMO = "demos/MontezumaRevenge-room1.h5"


def test_two_ranks_with_gloo_keep_identical_weights_and_curriculum(tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "curriculum_ppo", "train", "--demo", DEMO, "--run-dir", str(run_dir), "--device", "cpu",
           "--frames", "2048", "--num-envs", "2", "--workers", "1", "--steps", "32", "--minibatches", "2",
           "--min-episodes", "4", "--status-every", "0", "--threads", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 ranks agree on weights and curriculum" in result.stdout
    reports = [json.loads((run_dir / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["param_sha256"] == reports[1]["param_sha256"]
    assert reports[0]["curriculum"] == reports[1]["curriculum"]
    # Frames are counted over both ranks: 2 ranks x 2 envs x 32 steps x frameskip 4 per update.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["frames"] for r in rows] == [512 * (i + 1) for i in range(4)]
    assert reports[0]["updates"] == reports[1]["updates"] == 4
    # Only rank 0 writes checkpoints, and the run can be resumed by a single process.
    assert (run_dir / "checkpoints" / "latest.pt").exists()
    resumed = subprocess.run([sys.executable, "-m", "curriculum_ppo", "train", "--run-dir", str(run_dir), "--resume",
                              "--frames", "2560", "--status-every", "0"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["frames"] == 2048 + 512 and rows[-1]["updates"] == 4 + 2  # 1 rank: 256 frames per update
