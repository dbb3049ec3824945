"""The run directory's one owner (``curriculum_ppo.training.run_dir``): checkpoints and rank states
round-trip exactly, and what is not a checkpoint of this run is refused in one line.

Fast: the toy env in the learner process and its small MLP (the Atari round trip through the real
emulator is ``test_train.py::test_resume_continues_counters_model_and_curriculum``)."""

import json

import numpy as np
import pytest
import torch

from curriculum_ppo.curriculum import CurriculumConfig
from curriculum_ppo.errors import UserError
from curriculum_ppo.training.config import TrainConfig
from curriculum_ppo.training.loop import Trainer
from curriculum_ppo.training.run_dir import (RunDir, capture_rank_state, check_resumable, cut_metrics_rows,
                                             load_checkpoint, rank_state_digest, restore_rank_state,
                                             saved_config, saved_scheduler_state, saved_stall_state)
from curriculum_ppo.training.stats import EpisodeStats
from state_compare import assert_same_state


def toy_config(**overrides) -> TrainConfig:
    config = TrainConfig(env_kind="toy", toy={"length": 40, "num_actions": 2}, arch="mlp", device="cpu",
                         num_envs=2, num_workers=0, num_steps=8, total_frames=48, status_every=1e9,
                         curriculum=CurriculumConfig(window=8, min_episodes=4), **overrides)
    config.ppo.num_minibatches = 2
    return config


def test_save_then_load_gives_identical_model_optimizer_curriculum_rngs_and_counters(tmp_path):
    """A trained run's checkpoint, resumed, is the same state: weights, Adam's moments and steps, the
    scheduler (moved to where no fresh run is), the stall detector, every random stream (numpy, torch,
    the minibatch shuffle: the next draws are equal), the episode windows and the counters."""
    run = tmp_path / "run"
    first = Trainer(toy_config(), run, quiet=True)
    assert first.train() == 0 and first.updates == 3
    first = Trainer(toy_config(), run, resume=True, quiet=True)
    try:
        sched = first.scheduler
        for _ in range(100):  # a curriculum no fresh run has
            if sched.moves >= 2:
                break
            for _ in range(64):
                sched.record(sched.start_frame, True)
            sched.update()
        first.stall.load_state_dict({"scale": 0.5, "best_start": 2, "since": 40})
        first.stats.add({"score": 1.0, "start_frame": 0, "success": True})
        first.rng.random(7), torch.rand(5), torch.rand(3, generator=first.learner.generator)
        first.frames, first.elapsed = first.frames + 1, 12.5
        first.save_checkpoint()
    finally:
        first.close()  # gives the run directory free; the objects keep their state to compare with
    saved = load_checkpoint(run / "checkpoints" / "latest.pt")
    resumed = Trainer(toy_config(), run, resume=True, quiet=True)
    try:
        assert_same_state(resumed.policy.state_dict(), first.policy.state_dict(), "model")
        assert_same_state(resumed.behaviour.state_dict(), first.policy.state_dict(), "behaviour policy")
        assert_same_state(resumed.learner.state_dict(), first.learner.state_dict(), "learner")
        state = resumed.learner.optimizer.state_dict()["state"]
        assert state and all(float(v["step"]) == 3 * 4 * 2 for v in state.values())  # 3 updates x 4 epochs x 2
        assert resumed.scheduler.state_dict() == sched.state_dict() and resumed.scheduler.moves == 2
        assert resumed.scheduler.start_frame == sched.start_frame < 40 - 8
        assert resumed.stall.state_dict() == first.stall.state_dict() and resumed.stall.scale == 0.5
        assert resumed.stats.state_dict() == first.stats.state_dict()
        assert (resumed.frames, resumed.updates, resumed.elapsed) == (first.frames, 3, 12.5)
        assert resumed.resumed_rng == {"source": "checkpoints/latest.pt", "sha256": rank_state_digest(saved)}
        assert torch.equal(torch.get_rng_state(), saved["torch_rng"])
        assert resumed.rng.random() == first.rng.random()
        gen_a, gen_b = resumed.learner.generator, first.learner.generator
        assert torch.equal(torch.randperm(50, generator=gen_a), torch.randperm(50, generator=gen_b))
    finally:
        resumed.close()


def test_checkpoint_files_and_what_a_resume_refuses(tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(toy_config(latest_every=1, checkpoint_every=2), run, quiet=True)
    assert trainer.train() == 0
    layout = RunDir(run)
    ckpt = load_checkpoint(layout.latest)
    assert [p.name for p in layout.list_checkpoints()] == ["frames_000000000032.pt", "latest.pt"]
    assert layout.find_checkpoint("frames_000000000032.pt") == run / "checkpoints" / "frames_000000000032.pt"
    with pytest.raises(UserError, match="checkpoint not found"):
        layout.find_checkpoint("nope.pt")
    assert saved_config(ckpt) == trainer.config.to_dict()
    assert saved_scheduler_state(ckpt) == trainer.scheduler.state_dict()
    assert saved_stall_state(ckpt) == trainer.stall.state_dict()
    config = json.loads(layout.config.read_text())
    assert config.pop("version") and config == trainer.config.to_dict()
    check_resumable(ckpt, trainer.config.to_dict(), trainer.demo_info, run)
    for key, value in (("arch", "nature"), ("env_kind", "atari"), ("recurrent", True)):
        with pytest.raises(UserError, match=f"trained with {key}="):
            check_resumable(ckpt, {**trainer.config.to_dict(), key: value}, trainer.demo_info, run)
    with pytest.raises(UserError, match="another game or demo"):
        check_resumable(ckpt, trainer.config.to_dict(), {**trainer.demo_info, "length": 99}, run)
    with pytest.raises(UserError, match="already holds a run"):
        Trainer(toy_config(), run, quiet=True)
    with pytest.raises(UserError, match="nothing to resume"):
        Trainer(toy_config(), tmp_path / "empty", resume=True, quiet=True)


def test_load_checkpoint_refuses_what_is_not_a_checkpoint_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    newer = tmp_path / "newer.pt"
    torch.save({"format": "curriculum_ppo.checkpoint", "version": 2}, newer)
    for path, message in ((tmp_path / "missing.pt", "checkpoint not found"), (garbage, "not a readable checkpoint"),
                          (other, "is not a curriculum_ppo checkpoint"), (newer, "is checkpoint version 2")):
        with pytest.raises(UserError, match=message) as error:
            load_checkpoint(path)
        assert "\n" not in str(error.value)


def test_rank_state_round_trip_and_the_files_a_resume_does_not_trust(tmp_path):
    """Rank r > 0 saves its streams and windows in checkpoints/rank<r>.pt; loaded at the checkpoint's update
    by as many ranks, they give the same next draws; otherwise the resume is told why not (and reseeds)."""
    layout = RunDir(tmp_path)
    rng, generator, stats = np.random.default_rng(5), torch.Generator().manual_seed(6), EpisodeStats(window=4)
    for score in (1.0, 0.0, 2.0):
        stats.add({"score": score, "start_frame": 3, "success": score > 0})
    rng.random(3)
    layout.save_rank_state(capture_rank_state(rng, generator, stats.state_dict(), torch.device("cpu")),
                           rank=1, world_size=2, updates=7)
    ckpt = {"updates": 7}
    state, source = layout.load_rank_state(ckpt, rank=1, world_size=2)
    assert source == "checkpoints/rank1.pt"
    rng2, generator2 = np.random.default_rng(0), torch.Generator().manual_seed(0)
    restored_stats = EpisodeStats(window=4)
    restored_stats.load_state_dict(restore_rank_state(state, rng2, generator2, torch.device("cpu")))
    assert restored_stats.state_dict() == stats.state_dict()
    assert rng2.random() == rng.random()
    assert torch.equal(torch.rand(4, generator=generator2), torch.rand(4, generator=generator))
    assert layout.load_rank_state(ckpt, rank=0, world_size=2) == (ckpt, "checkpoints/latest.pt")
    assert layout.load_rank_state({"updates": 8}, rank=1, world_size=2)[0] is None
    assert "from update 7 with 2 ranks" in layout.load_rank_state(ckpt, rank=1, world_size=3)[1]
    assert layout.load_rank_state(ckpt, rank=2, world_size=3) == (None, "no rank2.pt")
    layout.rank_state_path(1).write_bytes(b"torn")
    assert layout.load_rank_state(ckpt, rank=1, world_size=2)[1].startswith("rank1.pt unreadable")


def test_metrics_rows_are_strict_json_and_a_resume_cuts_the_later_ones(tmp_path):
    layout = RunDir(tmp_path)
    for updates, rate in ((1, float("nan")), (2, 0.5), (3, float("inf"))):
        layout.append_metrics({"updates": updates, "rate": rate, "bins": [float("nan"), 0.25]})
    lines = layout.metrics.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"updates": 1, "rate": None, "bins": [None, 0.25]},
                                                    {"updates": 2, "rate": 0.5, "bins": [None, 0.25]},
                                                    {"updates": 3, "rate": None, "bins": [None, 0.25]}]
    assert layout.cut_metrics(2) == 1 and layout.metrics.read_text().splitlines() == lines[:2]
    text = '{"updates": 1}\n{"updates": 2}\nnot json\n{"updates": 3}\n{"updates": 4}\n{"upd'
    assert cut_metrics_rows(text, 2) == ('{"updates": 1}\n{"updates": 2}\nnot json\n', 3)


def test_without_tensorboard_a_run_says_so_once_and_keeps_metrics_jsonl(tmp_path, monkeypatch, capsys):
    """An install that cannot import TensorBoard loses its event files, not the run: one line on stderr."""
    import sys

    from curriculum_ppo.training.logger import Logger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import raise ImportError
    store = RunDir(tmp_path / "run")
    store.path.mkdir(parents=True)
    logger = Logger(store, is_main=True, quiet=True)
    for frames in (256, 512):
        logger.log({"frames": frames, "updates": frames // 256, "policy_loss": 0.5})
    logger.close()
    err = capsys.readouterr().err
    assert err.count("warning: no TensorBoard events") == 1 and "metrics.jsonl only" in err
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["frames"] for r in rows] == [256, 512]
    assert not store.tensorboard.exists()
