"""``evaluate``, ``plot`` and ``inspect RUN_DIR`` on the real emulator with a checkpoint trained here.

The tiny run is trained once per module by the real ``train`` command in a
subprocess, started as soon as the module begins, so the tests that need no
checkpoint (argument checks, the Breakout demo) run while it trains. The
evaluation commands themselves run in-process through ``cli.main`` (the console
script's entry point) to skip a PyTorch import per call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from curriculum_ppo.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demos" / "MontezumaRevenge-room1.h5"
FAST = ["--max-frames", "240", "--threads", "1", "--progress-every", "1"]


class _Training:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "curriculum_ppo", "train", "--run-dir", str(run_dir), "--frames", "2048",
             "--num-envs", "2", "--workers", "1", "--steps", "64", "--status-every", "1000"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._result = None

    def wait(self) -> Path:
        if self._result is None:
            out, err = self.proc.communicate(timeout=600)
            self._result = (self.proc.returncode, out, err)
        rc, out, err = self._result
        assert rc == 0, f"the trainer failed (exit {rc}):\n{err}"
        assert (self.run_dir / "checkpoints" / "latest.pt").is_file(), out + err
        return self.run_dir


@pytest.fixture(scope="module", autouse=True)
def training(tmp_path_factory):
    job = _Training(tmp_path_factory.mktemp("evaluate") / "run")
    yield job
    if job.proc.poll() is None:
        job.proc.kill()
        job.proc.communicate()


@pytest.fixture(scope="module")
def run_dir(training) -> Path:
    return training.wait()


@pytest.fixture(scope="module")
def checkpoint(run_dir) -> Path:
    return run_dir / "checkpoints" / "latest.pt"


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def fails(capsys, *args, match: str) -> str:
    rc, out, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("curriculum-ppo ") and "error:" in lines[0], err
    assert match in lines[0], lines[0]
    return lines[0]


def assert_nothing_written(directory: Path) -> None:
    assert list(directory.iterdir()) == [], list(directory.iterdir())


# --- no checkpoint needed (these run while the trainer works) ------------------------------
@pytest.mark.parametrize("args, match", [
    (["--episodes", "0"], "--episodes must be at least 1"),
    (["--episodes", "-3"], "--episodes must be at least 1"),
    (["--envs", "0"], "--envs must be at least 1"),
    (["--max-frames", "-1"], "--max-frames must be positive"),
    (["--sticky", "1.5", "--protocol", "sticky"], "--sticky must be in [0, 1)"),
    (["--protocol", "bogus"], "unknown protocol 'bogus'"),
    (["--json", "/nonexistent/x.json"], "directory /nonexistent does not exist"),
    (["--video", "/nonexistent/x.mp4"], "directory /nonexistent does not exist"),
    (["--video", "best.png"], "give an .mp4 name"),
    (["--video", "clash.mp4", "--json", "clash.png"], "is where the video's contact sheet goes"),
])
def test_bad_arguments_fail_before_any_work(capsys, tmp_path, args, match):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    extra = [] if "--json" in args else ["--json", out_dir / "r.json"]
    fails(capsys, "evaluate", "--checkpoint", tmp_path / "missing.pt", *args, *extra, match=match)
    assert_nothing_written(out_dir)


def test_unwritable_contact_sheet_fails_before_any_work(capsys, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "v.png").mkdir()  # where the contact sheet of v.mp4 would go
    fails(capsys, "evaluate", "--checkpoint", tmp_path / "missing.pt", "--video", out_dir / "v.mp4",
          match="--video's contact sheet")
    assert list(out_dir.iterdir()) == [out_dir / "v.png"]


def test_missing_and_corrupt_checkpoints(capsys, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    outputs = ["--json", out_dir / "r.json", "--video", out_dir / "v.mp4"]
    fails(capsys, "evaluate", "--checkpoint", tmp_path / "nope.pt", *outputs, match="checkpoint not found")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 40)
    fails(capsys, "evaluate", "--checkpoint", noise, *outputs, match="is not a readable checkpoint")
    fails(capsys, "evaluate", "--checkpoint", tmp_path, *outputs, match="is a directory")
    assert_nothing_written(out_dir)


@pytest.fixture(scope="module")
def breakout_demo(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("breakout")
    script = directory / "noop.actions"
    script.write_text("NOOP 50\n")
    out = directory / "breakout.h5"
    assert main(["record", "--game", "Breakout", "--actions", str(script), "--out", str(out)]) == 0
    return out


def test_breakout_demo_is_recorded(breakout_demo):
    assert breakout_demo.stat().st_size > 0


# --- with the trained checkpoint -------------------------------------------------------------
def test_all_protocols_table_json_and_video(capsys, checkpoint, tmp_path):
    out_json, out_video = tmp_path / "eval.json", tmp_path / "best.mp4"
    rc, out, err = cli(capsys, "evaluate", "--checkpoint", checkpoint, "--episodes", "2", "--protocol", "all",
                       "--envs", "8", "--workers", "1", "--json", out_json, "--video", out_video, *FAST)
    assert rc == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("protocol"))
    rows = lines[header + 2:header + 6]
    assert [r.split()[0] for r in rows] == ["plain", "noops", "sticky", "epsilon"]
    for column in ("episodes", "mean ± std", "median", "min", "max", "mean frames"):
        assert column in lines[header]
    assert "8/8 episodes done" in err and f"wrote {out_json}" in err  # progress on stderr, no TTY needed

    report = json.loads(out_json.read_text())
    assert report["game"] == "montezuma_revenge" and report["training_frames"] == 2048
    assert report["settings"]["max_frames"] == 240 and report["settings"]["end_on_life_loss"] is False
    assert [r["protocol"] for r in report["protocols"]] == ["plain", "noops", "sticky", "epsilon"]
    for row in report["protocols"]:
        assert row["episodes"] == 2 and len(row["scores"]) == 2 and len(row["frames"]) == 2
        assert row["seeds"] == report["seeds"]  # the same episode seeds for every protocol
        assert all(0 < f <= 240 for f in row["frames"])
        assert row["min"] <= row["median"] <= row["max"]
    assert len(set(report["seeds"])) == 2

    video = report["video"]
    assert video["path"] == str(out_video) and video["replay_matches"] is True  # seeded replay is exact
    cap = cv2.VideoCapture(str(out_video))
    try:
        assert cap.isOpened()
        ok, frame = cap.read()
        assert ok and frame.shape == (420, 640, 3)  # 210x160, pixels 2:1 wide, upscaled x2
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == video["video_frames"] > 1
    finally:
        cap.release()
    # The contact sheet: 8 evenly spaced video frames, 2 rows of 4, first and last frame included.
    assert video["sheet"] == str(tmp_path / "best.png") and video["sheet_frames"] == 8
    sheet = cv2.imread(video["sheet"])
    assert sheet is not None and sheet.shape == (2 * 420, 4 * 640, 3)
    cap = cv2.VideoCapture(str(out_video))
    try:
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame.astype(int))
    finally:
        cap.release()
    assert len(frames) == video["video_frames"]
    # The first and last tiles are the episode's first and last frames (PNG is lossless, the MP4 is
    # not: compare loosely, and check that the last tile is nearer the last frame than the first).
    first_tile, last_tile = sheet[:420, :640].astype(int), sheet[420:, 1920:].astype(int)
    assert np.abs(first_tile - frames[0]).mean() < 8
    assert np.abs(last_tile - frames[-1]).mean() < 8
    if np.abs(frames[-1] - frames[0]).mean() > 8:
        assert np.abs(last_tile - frames[-1]).mean() < np.abs(last_tile - frames[0]).mean()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.mp4", "best.png", "eval.json"]  # no temp files


def test_demo_start_frame_evaluation(capsys, checkpoint, tmp_path):
    out_json = tmp_path / "demo.json"
    rc, out, err = cli(capsys, "evaluate", "--checkpoint", checkpoint, "--demo", DEMO, "--start-frame", "600",
                       "--episodes", "2", "--protocol", "all", "--workers", "0", "--greedy", "--json", out_json,
                       *FAST)
    assert rc == 0, err
    assert "start: demo frame 600" in out and "success" in out
    report = json.loads(out_json.read_text())
    assert report["settings"]["start"] == {"demo": str(DEMO), "start_frame": 600}
    assert [r["protocol"] for r in report["protocols"]] == ["plain", "sticky", "epsilon"]  # no no-ops at demo starts
    for row in report["protocols"]:
        assert 0.0 <= row["success_rate"] <= 1.0 and len(row["successes"]) == 2
    fails(capsys, "evaluate", "--checkpoint", checkpoint, "--demo", DEMO, "--start-frame", "9999", *FAST,
          match="--start-frame 9999 is outside the demo (0..635)")
    fails(capsys, "evaluate", "--checkpoint", checkpoint, "--demo", DEMO, "--protocol", "noops", *FAST,
          match="noops protocol does not apply to demo starts")


def test_demo_of_another_game_is_refused(capsys, checkpoint, breakout_demo, tmp_path):
    fails(capsys, "evaluate", "--checkpoint", checkpoint, "--demo", breakout_demo, "--start-frame", "10",
          "--json", tmp_path / "x.json", *FAST,
          match="is a Breakout demo but the checkpoint was trained on MontezumaRevenge")
    assert not (tmp_path / "x.json").exists()


def test_truncated_and_incompatible_checkpoints(capsys, checkpoint, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    outputs = ["--json", out_dir / "r.json"]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:100_000])
    fails(capsys, "evaluate", "--checkpoint", truncated, *outputs, match="is not a readable checkpoint")

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["version"] = 99
    future = tmp_path / "future.pt"
    torch.save(state, future)
    fails(capsys, "evaluate", "--checkpoint", future, *outputs, match="checkpoint version 99")

    state["version"] = 1
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("policy_head")}
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    fails(capsys, "evaluate", "--checkpoint", broken, *outputs, match="do not fit")
    assert_nothing_written(out_dir)


def test_checkpoint_of_an_older_version_keeps_its_env_time_limit(checkpoint, tmp_path):
    """Older configs named the env's hard cap ``max_episode_frames`` (today ``time_limit_frames``): it is renamed
    on load, not dropped."""
    from curriculum_ppo.evaluation.checkpoint import load_for_eval

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = json.loads(state["config_json"])
    config["atari"]["max_episode_frames"] = config["atari"].pop("time_limit_frames") - 1000
    state["config_json"] = json.dumps(config)
    old = tmp_path / "old.pt"
    torch.save(state, old)
    assert load_for_eval(old, "cpu").atari["time_limit_frames"] == 107_000


def test_recurrent_policy_is_evaluated_with_its_gru_state(capsys, checkpoint, tmp_path):
    """A GRU checkpoint (fresh weights in the trained checkpoint's frame): the state is zeroed per episode."""
    from curriculum_ppo.evaluation.checkpoint import load_for_eval
    from curriculum_ppo.evaluation.env import EvalEnvFactory
    from curriculum_ppo.evaluation.plan import EvalPlan
    from curriculum_ppo.evaluation.protocols import EvalSettings
    from curriculum_ppo.evaluation.runner import run_episodes
    from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    pc = json.loads(state["policy_config_json"])
    pc["recurrent"] = True
    config = json.loads(state["config_json"])
    config["recurrent"] = True
    torch.manual_seed(3)
    net = ActorCritic(PolicyConfig(**{**pc, "obs_shape": tuple(pc["obs_shape"])}))
    state.update(policy_config_json=json.dumps(pc), config_json=json.dumps(config), model=net.state_dict())
    path = tmp_path / "gru.pt"
    torch.save(state, path)

    # Greedy actions from the deterministic start: every episode must be the same action sequence,
    # including the third one, which env 0 starts right after its first (with a zeroed GRU state).
    ckpt = load_for_eval(path, torch.device("cpu"))
    assert ckpt.recurrent
    atari = {**ckpt.atari, "end_on_life_loss": False, "time_limit_frames": 160}
    jobs = [("plain", 5, None)] * 3
    factory = EvalEnvFactory(game=ckpt.game, atari=atari, rules=ckpt.rules,
                             protocol_configs={"plain": {"atari": atari, "epsilon": 0.0}})
    plan = EvalPlan(factory=factory, jobs=jobs, protocols=["plain"], seeds=[5])
    settings = EvalSettings(envs=2, workers=0, greedy=True, threads=1)
    results, best = run_episodes(ckpt, plan, settings, torch.device("cpu"), quiet=True)
    assert [r["env"] for r in results] == [0, 1, 0]
    assert len({r["actions_digest"] for r in results}) == 1, results

    rc, out, err = cli(capsys, "evaluate", "--checkpoint", path, "--episodes", "3", "--protocol", "plain",
                       "--envs", "2", "--workers", "0", "--max-frames", "120", "--threads", "1")
    assert rc == 0, err
    assert "plain" in out and "3/3 episodes done" in err


def test_results_do_not_depend_on_where_the_envs_run(checkpoint):
    """The same jobs played by envs in this process and by two worker processes: each env learns its
    next job from its reset options, so every result (score, frames, end, the env that played it and
    a digest of its actions) is the same; 7 jobs on 3 envs leave envs idle at the end."""
    from curriculum_ppo.evaluation.checkpoint import load_for_eval
    from curriculum_ppo.evaluation.plan import build_plan
    from curriculum_ppo.evaluation.protocols import EvalSettings
    from curriculum_ppo.evaluation.runner import run_episodes

    ckpt = load_for_eval(checkpoint, torch.device("cpu"))
    runs = []
    for workers in (0, 2):
        settings = EvalSettings(episodes=7, protocols=("sticky",), envs=3, workers=workers, max_frames=200,
                                threads=1, seed=4)
        plan = build_plan(settings, ckpt.game, ckpt.atari, ckpt.rules)
        runs.append(run_episodes(ckpt, plan, settings, torch.device("cpu"), quiet=True))
    (here, best_here), (there, best_there) = runs
    assert here == there and len(here) == 7 and {r["env"] for r in here} == {0, 1, 2}
    assert [r["seed"] for r in here] == plan.seeds
    assert best_here["job"] == best_there["job"] and np.array_equal(best_here["actions"], best_there["actions"])


def test_plot_writes_three_pngs(capsys, run_dir, tmp_path):
    for name in ("curriculum.png", "score.png", "success.png"):
        (run_dir / name).unlink(missing_ok=True)
    rc, out, err = cli(capsys, "plot", run_dir)
    assert rc == 0, err
    paths = [Path(line) for line in out.splitlines()]
    assert sorted(p.name for p in paths) == ["curriculum.png", "score.png", "success.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fails(capsys, "plot", tmp_path / "nope", match="run directory not found")
    fails(capsys, "plot", tmp_path, match="has no metrics.jsonl")


def test_inspect_run_dir(capsys, run_dir, tmp_path):
    rc, out, err = cli(capsys, "inspect", run_dir)
    assert rc == 0, err
    assert "MontezumaRevenge" in out and "MontezumaRevenge-room1.h5 (635 frames)" in out
    assert "frames 2,048 / 2,048 (100%)" in out and "start frame 571 / 635" in out
    assert "latest.pt" in out and "losses: policy" in out
    assert "success inside the window, front to back:" in out
    assert "success by start frame (all episodes so far" in out and "success_by_start.png" in out
    assert len(out.splitlines()) <= 24  # one screen
    rc, out, err = cli(capsys, "inspect", run_dir, "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["config"]["game"] == "montezuma_revenge" and info["config"]["total_frames"] == 2048
    assert info["latest"]["frames"] == 2048 and info["progress"] == 1.0
    assert [c["name"] for c in info["checkpoints"]] == ["latest.pt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(capsys, "inspect", empty, match="is not a training run directory")


def test_inspect_run_dir_whose_demo_is_damaged(capsys, run_dir, tmp_path):
    """The run's demo is read by the guarded reader: a damaged one leaves the rest of the report."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    demo = tmp_path / "damaged.h5"
    demo.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 40)
    config = json.loads((run / "config.json").read_text())
    config["demo"] = str(demo)
    (run / "config.json").write_text(json.dumps(config))
    rc, out, err = cli(capsys, "inspect", run)
    assert rc == 0, err
    assert "frames 2,048 / 2,048 (100%)" in out and "damaged.h5" in out


def test_inspect_since_shows_only_the_episodes_between_two_checkpoints(capsys, run_dir, tmp_path):
    """``inspect RUN --since CKPT``: per-start success over the episodes after CKPT, from the
    all-time counts of two real checkpoints (the older one is the latest with fewer episodes)."""
    import shutil

    from curriculum_ppo.train import load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    state = json.loads(ckpt["scheduler_json"])
    total = state["total"]
    assert total["index"], "the tiny run recorded no demo-start episode"
    # The older checkpoint had seen every episode except one failure and one success at the first
    # played start frame (or just the failure when that frame only had one episode).
    first = total["index"][0] * state["frame_granularity"]
    attempts, successes = total["attempts"][0], total["successes"][0]
    removed = (min(2.0, attempts), min(1.0, successes, attempts - 1))
    total["attempts"][0] -= removed[0]
    total["successes"][0] -= removed[1]
    ckpt["scheduler_json"] = json.dumps(state)
    torch.save(ckpt, run / "checkpoints" / "older.pt")

    rc, out, err = cli(capsys, "inspect", run, "--since", "older.pt", "--bin-frames", "1", "--json")
    assert rc == 0, err
    table = json.loads(out)["success_by_start_since"]
    rows = [b for b in table["bins"] if b["episodes"]]
    assert [(b["first"], b["episodes"]) for b in rows] == [(first, int(removed[0]))]
    assert rows[0]["success_rate"] == pytest.approx(removed[1] / removed[0])
    assert table["frames"] == table["since_frames"] == 2048 and table["bin_frames"] == 1
    rc, out, err = cli(capsys, "inspect", run, "--since", run / "checkpoints" / "older.pt")
    assert rc == 0, err
    assert "success by start frame between older.pt (2,048 frames) and latest.pt (2,048 frames):" in out

    rc, out, err = cli(capsys, "inspect", run, "--since", "latest.pt")
    assert rc == 0 and "no episodes in between" in out, err
    # --until picks the later checkpoint; --starts sums a range of start frames into one row.
    rc, out, err = cli(capsys, "inspect", run, "--since", "older.pt", "--until", "latest.pt",
                       "--starts", f"{first}:{min(first + 5, 634)}", "--json")
    assert rc == 0, err
    table = json.loads(out)["success_by_start_since"]
    assert [(b["first"], b["last"], b["episodes"]) for b in table["bins"]] == [(first, min(first + 5, 634), int(removed[0]))]
    rc, out, err = cli(capsys, "inspect", run, "--since", "latest.pt", "--until", "older.pt")
    assert rc == 2 and "more episodes than the newer one" in err
    fails(capsys, "inspect", run, "--since", "older.pt", "--starts", "600:700", match="is not a range of start")
    fails(capsys, "inspect", run, "--since", "older.pt", "--starts", "7", match="--starts takes FIRST:LAST")

    # Bad input: the checkpoints in the wrong order, a missing one, --bin-frames alone or on a demo.
    shutil.copy(run / "checkpoints" / "latest.pt", run / "newer.pt")
    shutil.copy(run / "checkpoints" / "older.pt", run / "checkpoints" / "latest.pt")
    fails(capsys, "inspect", run, "--since", run / "newer.pt", match="has more episodes than the newer one")
    fails(capsys, "inspect", run, "--since", "nope.pt", match=f"checkpoint not found: {run / 'checkpoints' / 'nope.pt'}")
    fails(capsys, "inspect", run, "--bin-frames", "4", match="need --since")
    fails(capsys, "inspect", run, "--since", "older.pt", "--bin-frames", "0", match="--bin-frames must be >= 1")
    fails(capsys, "inspect", DEMO, "--since", "x.pt", match="apply to a training run directory")
