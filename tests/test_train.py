"""The ``train`` command end to end on the real emulator with tiny budgets: outputs, resume, faults."""

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculum_ppo.errors import UserError
from curriculum_ppo.device import learner_torch_threads
from curriculum_ppo.training.config import TrainConfig
from curriculum_ppo.training.loop import Trainer
from curriculum_ppo.training.run_dir import load_checkpoint
from curriculum_ppo.training.seeds import env_seed
from curriculum_ppo.training.stats import success_by_start_table
from state_compare import assert_same_state

DEMO = "demos/MontezumaRevenge-room1.h5"
# --workers 0 steps the envs in the learner process: the same env and loop code without the start-up
# cost of worker processes (test_a_dying_worker... and the tiny_run fixture use real workers).
TINY = ["--num-envs", "2", "--workers", "0", "--steps", "32", "--status-every", "0", "--minibatches", "2"]


def cli(*args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "curriculum_ppo", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = cli("train", "--demo", DEMO, "--run-dir", str(run_dir), "--frames", "1280", *TINY[:2], "--workers", "1",
                 *TINY[4:])
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_train_writes_config_metrics_tensorboard_checkpoint_and_plots(tiny_run):
    run_dir, result = tiny_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["demo"] == DEMO and config["num_envs"] == 2 and config["num_steps"] == 32
    rows = metrics(run_dir)
    assert [r["frames"] for r in rows] == [256 * (i + 1) for i in range(5)]  # 2 envs x 32 steps x frameskip 4
    for key in ("fps", "start_frame", "success_rate", "policy_loss", "value_loss", "entropy", "lr", "ent_coef"):
        assert key in rows[-1]
    assert rows[-1]["start_frame"] == 635 - 64  # the window starts at the demo's end
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tb").iterdir())
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert ckpt["frames"] == 1280 and ckpt["updates"] == 5 and ckpt["game"] == "montezuma_revenge"
    for png in ("curriculum.png", "score.png", "success.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "frames" in result.stdout and "start 571/635" in result.stdout  # the status line
    assert len(rows[-1]["window_bin_success_rates"]) == 4  # front to back of the window
    # why episodes ended, per update: every finished episode is counted once, under its reason
    ends = [r["episode_ends"] for r in rows]
    assert sum(sum(e.values()) for e in ends) == rows[-1]["episodes"] > 0
    assert set().union(*ends) <= {"success_extra_done", "horizon", "lagging", "max_frames", "life_lost", "game_over"}
    assert "warning:" not in result.stdout  # every start of the bundled demo can succeed within the episode cap
    text = (run_dir / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON: rates without episodes are null
    # train's own account of why it stopped, for scripts that resume runs (bench_learning.py)
    assert json.loads((run_dir / "stop.json").read_text()) == {"frames": 1280, "kind": "frames",
                                                                 "reason": "frame budget used"}


def test_a_cap_that_blocks_the_curriculum_is_named_in_one_line(tmp_path):
    result = cli("train", "--demo", DEMO, "--run-dir", str(tmp_path / "r"), "--frames", "256", *TINY,
                 "--success-rule", "demo_end", "--max-episode-frames", "200")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stdout
    assert "frames 0..434" in warnings[0] and "--max-episode-frames" in warnings[0]  # 634 + 1 - 200 = 435


def test_minutes_budget_stops_the_run_and_says_so(tmp_path):
    run_dir = tmp_path / "timed"
    result = cli("train", "--demo", DEMO, "--run-dir", str(run_dir), "--frames", "10000000", "--minutes", "0.01",
                 *TINY)
    assert result.returncode == 0, result.stderr
    stop = json.loads((run_dir / "stop.json").read_text())
    assert stop["kind"] == "time" and 0 < stop["frames"] < 10_000_000
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["frames"] == stop["frames"]


def test_success_by_start_report_counts_every_demo_start_episode(tiny_run):
    run_dir, _ = tiny_run
    table = json.loads((run_dir / "success_by_start.json").read_text())
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    total = json.loads(ckpt["scheduler_json"])["total"]
    assert sum(b["episodes"] for b in table["bins"]) == round(sum(total["attempts"])) > 0
    assert table["demo_length"] == 635 and table["start_frame"] == 571
    played = [b for b in table["bins"] if b["episodes"]]
    assert all(b["last"] >= 571 - table["bin_frames"] for b in played)  # only window starts so far
    assert all(0.0 <= b["success_rate"] <= 1.0 for b in played)
    assert (run_dir / "success_by_start.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_success_by_start_table_bins_the_demo():
    starts = np.array([0, 5, 10, 630, 634])
    attempts = np.array([2.0, 2.0, 1.0, 4.0, 4.0])
    successes = np.array([0.0, 1.0, 1.0, 4.0, 2.0])
    table = success_by_start_table(starts, attempts, successes, demo_length=635, bins=20)
    assert table["bin_frames"] == 32 and len(table["bins"]) == 20
    assert table["bins"][0] == {"first": 0, "last": 31, "episodes": 5, "success_rate": 0.4}
    assert table["bins"][-1] == {"first": 608, "last": 634, "episodes": 8, "success_rate": 0.75}
    assert all(b["episodes"] == 0 and b["success_rate"] is None for b in table["bins"][1:-1])


def _run_config(run_dir: Path) -> TrainConfig:
    """The run's own config.json, with its envs stepped in this process (a runtime setting)."""
    saved = json.loads((run_dir / "config.json").read_text())
    saved.pop("version")
    config = TrainConfig.from_dict(saved)
    config.num_workers, config.status_every = 0, 1e9
    return config


def test_resume_continues_counters_model_and_curriculum(tiny_run, tmp_path):
    """Right after loading, everything the checkpoint holds is back exactly: weights, Adam's moments and
    step counts, the curriculum (at a position a fresh run does not have), the stall detector, the learner's
    RNGs and the episode windows behind --stop-at-success; the resumed run then goes on from there."""
    run_dir, _ = tiny_run
    copy = tmp_path / "resumed"
    subprocess.run(["cp", "-r", str(run_dir), str(copy)], check=True)
    latest = copy / "checkpoints" / "latest.pt"
    # Give the checkpoint a state no fresh Trainer has: the curriculum moved back twice, and the
    # episode windows hold wins from the game start.
    trainer = Trainer(_run_config(copy), copy, resume=True, quiet=True)
    try:
        sched, rng = trainer.scheduler, np.random.default_rng(0)
        initial_start = sched.start_frame
        while sched.moves < 2:
            for _ in range(64):
                sched.record(sched.sample_start(rng, 0, 1), True)
            sched.update()
        for score in (400.0, 0.0, 400.0):
            trainer.stats.add({"score": score, "start_frame": 0, "success": score > 0})
        trainer.rng.random(7)  # and streams that are not where a fresh run's are
        torch.rand(5)
        trainer.save_checkpoint()
    finally:
        trainer.close()
    saved = load_checkpoint(latest)
    moved_start = json.loads(saved["scheduler_json"])["slot"] * sched.granularity
    assert moved_start == sched.start_frame < initial_start

    resumed = Trainer(_run_config(copy), copy, resume=True, quiet=True)
    try:
        assert_same_state(resumed.policy.state_dict(), saved["model"], "model")
        assert_same_state(resumed.behaviour.state_dict(), saved["model"], "behaviour policy")
        optimizer = resumed.learner.optimizer.state_dict()
        assert_same_state(optimizer["state"], saved["learner"]["optimizer"]["state"], "optimizer")
        moments = [v["exp_avg_sq"] for v in optimizer["state"].values()]
        assert moments and all(m.abs().sum() > 0 for m in moments)  # 5 updates of moments, not a fresh Adam
        ppo = resumed.config.ppo
        assert all(float(v["step"]) == 5 * ppo.num_epochs * ppo.num_minibatches for v in optimizer["state"].values())
        assert resumed.scheduler.state_dict() == json.loads(saved["scheduler_json"])
        assert resumed.scheduler.start_frame == moved_start and resumed.scheduler.moves == 2
        assert resumed.stall.state_dict() == json.loads(saved["stall_json"])
        assert torch.equal(resumed.learner.generator.get_state(), saved["learner"]["generator"])
        assert torch.equal(torch.get_rng_state(), saved["torch_rng"])
        assert resumed.rng.bit_generator.state == json.loads(saved["numpy_rng_json"])
        assert list(resumed.stats.from_start_success) == [True, False, True]
        assert resumed.stats.state_dict() == json.loads(saved["episode_stats_json"])
        assert (resumed.frames, resumed.updates, resumed.elapsed) == (saved["frames"], 5, saved["elapsed"])
        assert resumed.resumed_rng["source"] == "checkpoints/latest.pt"
        # The envs do not replay the first run's random streams: their seeds come from (seed, rank, updates).
        seeds = [env.emulator.settings.seed for env in resumed.pool.envs]
        assert seeds == [env_seed(resumed.config.seed, 0, 5) + i for i in range(2)]
        assert seeds[0] != env_seed(resumed.config.seed, 0, 0) == 100 * resumed.config.seed
    finally:
        resumed.close()

    result = cli("train", "--run-dir", str(copy), "--resume", "--frames", "2560", "--status-every", "0")
    assert result.returncode == 0, result.stderr
    rows = metrics(copy)
    assert [r["updates"] for r in rows] == list(range(1, 11))
    assert [r["frames"] for r in rows][-5:] == [1280 + 256 * (i + 1) for i in range(5)]
    assert rows[5]["start_frame"] == moved_start  # the curriculum goes on where it was saved
    assert rows[5]["episodes"] >= saved["episodes"]
    after = load_checkpoint(latest)
    assert after["updates"] == 10 and after["episodes"] >= saved["episodes"]
    assert json.loads(after["scheduler_json"])["moves"] >= 2
    changed = [not torch.equal(saved["model"][k], after["model"][k]) for k in saved["model"]]
    assert any(changed)  # and it trained on


def test_env_seeds_of_a_resumed_run_depend_on_seed_rank_and_updates():
    fresh = {env_seed(seed, rank, 0) for seed in (1, 2) for rank in (0, 1)}
    assert fresh == {100, 100100, 200, 100200}  # a fresh run's seeds are what they always were
    resumed = {env_seed(seed, rank, updates) for seed in (1, 2) for rank in (0, 1) for updates in (5, 10, 15)}
    assert len(resumed) == 12 and not resumed & fresh
    assert all(0 <= s < 2**30 for s in resumed)  # ALE takes a 32-bit seed; env i adds i


def test_resume_cuts_the_metrics_logged_after_the_checkpoint(tiny_run, tmp_path):
    """A run killed after its checkpoint at update 5 had logged updates 6 and 7, and half of 8: the
    resume drops them (they run again) and the log holds every update once, in order."""
    run_dir, _ = tiny_run
    copy = tmp_path / "killed"
    subprocess.run(["cp", "-r", str(run_dir), str(copy)], check=True)
    rows = metrics(copy)
    stale = [dict(rows[-1], updates=u, frames=256 * u, policy_loss=123.0) for u in (6, 7)]
    with open(copy / "metrics.jsonl", "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in stale) + json.dumps(dict(rows[-1], updates=8))[:40])
    result = cli("train", "--run-dir", str(copy), "--resume", "--frames", "2048", "--status-every", "0")
    assert result.returncode == 0, result.stderr
    assert "3 metrics rows logged after the checkpoint (update 5) were dropped" in result.stdout
    after = metrics(copy)
    assert [r["updates"] for r in after] == list(range(1, 9))
    assert after[:5] == rows and all(r["policy_loss"] != 123.0 for r in after)
    assert not list(copy.glob(".metrics.jsonl.*"))  # cut through a temp file and a rename


def test_cut_metrics_rows_keeps_what_is_not_a_later_row():
    from curriculum_ppo.training.run_dir import cut_metrics_rows

    text = '{"updates": 1}\n{"updates": 2}\nnot json\n{"updates": 3}\n{"updates": 4}\n{"upd'
    assert cut_metrics_rows(text, 2) == ('{"updates": 1}\n{"updates": 2}\nnot json\n', 3)
    assert cut_metrics_rows('{"updates": 1}', 5) == ('{"updates": 1}\n', 0)  # the next row starts a line
    assert cut_metrics_rows("", 5) == ("", 0)


def test_resume_refuses_changed_settings_and_existing_run_needs_resume(tiny_run):
    run_dir, _ = tiny_run
    result = cli("train", "--run-dir", str(run_dir), "--frames", "512", *TINY)
    assert result.returncode == 2 and "use --resume" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = cli("train", "--run-dir", str(run_dir), "--resume", "--lr", "0.1")
    assert result.returncode == 2 and "--resume keeps the run's settings" in result.stderr


def test_resume_without_checkpoint_and_bad_demo(tmp_path):
    result = cli("train", "--run-dir", str(tmp_path / "none"), "--resume")
    assert result.returncode == 2, result.stderr
    assert "nothing to resume" in result.stderr.lower() or "not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "none").exists()
    bad = tmp_path / "bad.h5"
    bad.write_text("not a demo")
    result = cli("train", "--demo", str(bad), "--run-dir", str(tmp_path / "r"), *TINY)
    assert result.returncode == 2 and "not an HDF5 file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = cli("train", "--demo", DEMO, "--game", "Pitfall", "--run-dir", str(tmp_path / "r2"), *TINY)
    assert result.returncode == 2 and "does not match the demo" in result.stderr


def test_stop_at_success_must_be_a_fraction_and_needs_a_demo(tmp_path):
    for value in ("1.5", "-0.2"):
        result = cli("train", "--run-dir", str(tmp_path / "r"), "--stop-at-success", value, *TINY)
        assert result.returncode == 2 and "--stop-at-success must be in (0, 1]" in result.stderr
    result = cli("train", "--no-curriculum", "--run-dir", str(tmp_path / "r"), "--stop-at-success", "0.5", *TINY)
    assert result.returncode == 2 and "--stop-at-success needs a demo" in result.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_incompatible_checkpoint_in_run_dir(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    copy = tmp_path / "other"
    subprocess.run(["cp", "-r", str(run_dir), str(copy)], check=True)
    config = json.loads((copy / "config.json").read_text())
    config["arch"] = "large"
    (copy / "config.json").write_text(json.dumps(config))
    result = cli("train", "--run-dir", str(copy), "--resume", "--status-every", "0")
    assert result.returncode == 2 and "arch" in result.stderr and "Traceback" not in result.stderr


def _start_training(run_dir: Path, frames: int = 10_000_000):
    return subprocess.Popen([sys.executable, "-m", "curriculum_ppo", "train", "--demo", DEMO, "--run-dir",
                             str(run_dir), "--frames", str(frames), *TINY], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_sigint_writes_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "sigint"
    proc = _start_training(run_dir)
    assert _wait_for(lambda: (run_dir / "metrics.jsonl").exists() and len(metrics(run_dir)) >= 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "Traceback" not in err
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert ckpt["updates"] >= 2
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))
    assert json.loads((run_dir / "stop.json").read_text())["kind"] == "signal"


def test_resume_after_kill_9(tmp_path):
    run_dir = tmp_path / "killed"
    proc = _start_training(run_dir)
    latest = run_dir / "checkpoints" / "latest.pt"
    assert _wait_for(lambda: latest.exists() and len(metrics(run_dir)) >= 7)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate(timeout=60)
    saved = load_checkpoint(latest)  # the last atomic checkpoint is intact
    result = cli("train", "--run-dir", str(run_dir), "--resume", "--frames", str(saved["frames"] + 512),
                 "--status-every", "0")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(latest)["frames"] == saved["frames"] + 512
    # The updates the killed run logged after its checkpoint were cut; the resumed run logged them anew.
    assert [r["updates"] for r in metrics(run_dir)] == list(range(1, saved["updates"] + 3))


def test_a_dying_worker_is_named_and_the_checkpoint_kept(tmp_path):
    config = TrainConfig(demo=DEMO, total_frames=10_000_000, num_envs=2, num_workers=2, num_steps=32,
                         status_every=1e9, latest_every=1)
    config.ppo.num_minibatches = 2
    trainer = Trainer(config, tmp_path / "crash", quiet=True)
    victim = trainer.pool.processes[1]

    def kill_later():
        _wait_for(lambda: trainer.updates >= 2)
        os.kill(victim.pid, signal.SIGKILL)
    threading.Thread(target=kill_later, daemon=True).start()
    with pytest.raises(UserError, match=r"env worker 1 \(pid \d+, envs 1\.\.1\) died.*checkpoint kept"):
        trainer.train()
    assert load_checkpoint(tmp_path / "crash" / "checkpoints" / "latest.pt")["updates"] >= 2


@pytest.mark.parametrize("recurrent", [False, True], ids=["cnn", "gru"])
def test_pipelined_env_groups_fill_the_rollout_exactly_like_one_batch(tmp_path, recurrent):
    """``env_groups=2`` reorders the work (one group's actions are chosen while the other steps) but
    must not change what is recorded: with the real network acting greedily, the rollout buffers,
    finished episodes and GRU state equal those of the one-batch loop, step for step."""
    def rollout(groups: int):
        config = TrainConfig(demo=DEMO, num_envs=4, num_workers=0, num_steps=48, env_groups=groups, seed=3,
                             recurrent=recurrent, status_every=1e9)
        trainer = Trainer(config, tmp_path / f"groups{groups}", quiet=True)
        try:
            policy = trainer.behaviour
            policy.act = functools.partial(type(policy).act, policy, deterministic=True)
            buffers = trainer._start_envs()
            episodes, hidden = trainer._collect(policy, buffers, policy.initial_state(4, trainer.device))
            return buffers, episodes, hidden
        finally:
            trainer.close()

    one, episodes_one, hidden_one = rollout(1)
    two, episodes_two, hidden_two = rollout(2)
    assert len(episodes_one) >= 2 and one["truncations"].any()  # restarts and bootstrapped cuts happened
    assert episodes_one == episodes_two
    # Stored as the learner reads it fastest (rollout_obs_buffer): each frame stack channels-last.
    assert one["obs"].flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    for key in ("obs", "actions", "rewards", "terminations", "truncations", "episode_starts", "loss_mask",
                "next_episode_starts", "last_obs"):
        assert torch.equal(one[key], two[key]), key
    for key in ("values", "logprobs", "truncation_values"):
        assert torch.allclose(one[key], two[key], atol=1e-5), key
    assert (hidden_one is None) == (not recurrent)
    if recurrent:
        assert torch.allclose(hidden_one, hidden_two, atol=1e-5)


@pytest.mark.parametrize("by_worker,spin_us", [(False, 0.0), (True, 0.0), (False, 2000.0)],
                         ids=["spread", "by-worker", "spread-spinning"])
def test_pipelined_groups_with_the_learner_as_a_worker_train_end_to_end(tmp_path, by_worker, spin_us):
    """The whole loop (rollouts overlapped with updates, checkpoints) with the pool options on."""
    config = TrainConfig(demo=DEMO, total_frames=2 * 4 * 16 * 4, num_envs=4, num_workers=2, num_steps=16,
                         env_groups=2, learner_steps_envs=True, groups_by_worker=by_worker, spin_wait_us=spin_us,
                         status_every=1e9)
    config.ppo.num_minibatches = 2
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    assert len(trainer.pool.processes) == 1 and trainer.pool.spin_seconds == spin_us * 1e-6
    assert trainer.train() == 0
    assert trainer.updates == 2 and load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["updates"] == 2


def test_env_groups_must_fit_the_envs(tmp_path):
    for value in ("0", "3"):
        result = cli("train", "--run-dir", str(tmp_path / "r"), "--env-groups", value, *TINY)
        assert result.returncode == 2 and "--env-groups must be in 1..--num-envs" in result.stderr
    for extra, message in ((["--workers", "2", "--env-groups", "1"], "needs --env-groups to be a multiple of the 2"),
                           (["--env-groups", "2"], "needs env worker processes (got --workers 0)")):  # TINY: --workers 0
        result = cli("train", "--run-dir", str(tmp_path / "r"), *TINY, "--groups-by-worker", *extra)
        assert result.returncode == 2 and f"--groups-by-worker {message}" in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()


def test_explore_and_memory_knobs_are_validated(tmp_path):
    for flag, value, message in (("--explore-epsilon", "1.5", "--explore-epsilon must be in [0, 1]"),
                                 ("--explore-steps", "-1", "--explore-steps must be >= 0"),
                                 ("--explore-fraction", "2", "--explore-fraction must be in [0, 1]"),
                                 ("--front-half-life", "-1", "--front-half-life must be >= 0 episodes"),
                                 ("--spin-wait-us", "-5", "--spin-wait-us must be in 0..1000000"),
                                 ("--spin-wait-us", "2000", "--spin-wait-us needs env worker processes")):  # TINY: --workers 0
        result = cli("train", "--run-dir", str(tmp_path / "r"), flag, value, *TINY)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()


def test_pool_and_memory_flags_reach_the_config(tmp_path):
    """The parser and build_config accept --groups-by-worker and keep --front-half-life 0 ('no forgetting')."""
    import argparse

    from curriculum_ppo.train_cli import add_train_parser, build_config

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    base = ["train", "--run-dir", str(tmp_path / "r"), "--workers", "2", "--num-envs", "4"]
    config = build_config(parser.parse_args(base + ["--env-groups", "2", "--groups-by-worker",
                                                    "--front-half-life", "0"]))
    assert config.groups_by_worker and config.env_groups == 2 and config.curriculum.front_half_life == 0
    config = build_config(parser.parse_args(base + ["--front-half-life", "32"]))
    assert not config.groups_by_worker and config.curriculum.front_half_life == 32.0
    assert TrainConfig().curriculum.front_half_life == 64.0 and not TrainConfig().groups_by_worker


def test_learner_threads_leave_the_cores_to_the_env_workers_on_a_gpu():
    assert learner_torch_threads(None, "cpu") is None  # the CPU update needs every core
    assert learner_torch_threads(None, "cuda") == 1  # measured 1.7x faster on a 16-core GPU machine
    assert learner_torch_threads(3, "cuda") == 3 and learner_torch_threads(3, "cpu") == 3  # --threads wins
