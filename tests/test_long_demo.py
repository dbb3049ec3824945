"""The long-demo evidence: the scripted Breakout demo (scripts/make_long_demo.py) and the oracle agents of
scripts/bench_episode_cost.py, on the real emulator and real demo files.

The full-size demo (53,061 frames) and the full benchmark take minutes; here the same code makes a demo
of the player's first few thousand frames and runs the benchmark's quick mode on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import make_long_demo  # noqa: E402

SHORT = 3000


def _run(script: str, *args, env_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CURRICULUM_PPO_BENCH_DIR": str(env_dir)}
    return subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory) -> Path:
    """The player's first 3,000 frames, made through the script's command line (it verifies the demo)."""
    out = tmp_path_factory.mktemp("long_demo")
    result = _run("make_long_demo.py", "--max-frames", SHORT, "--out-dir", out, env_dir=out / "bench")
    assert result.returncode == 0, result.stderr
    assert "(verifies)" in result.stdout
    return out / make_long_demo.DEMO_NAME


# -- the demo --------------------------------------------------------------------------------------
def test_first_frames_make_a_scripted_demo_that_verifies_and_loses_no_life(short_demo):
    from curriculum_ppo.demo.store import load_demo

    demo = load_demo(short_demo)
    assert len(demo) == SHORT and demo.game == "breakout"
    assert demo.attrs["source"] == "scripted"
    detail = json.loads(demo.attrs["source_detail"])
    script = short_demo.with_name(make_long_demo.SCRIPT_NAME)
    assert detail["script"] == script.name
    assert len(demo.reward_events()) >= 20 and demo.total_return > 0
    assert demo.life_losses() == []
    cli = subprocess.run([sys.executable, "-m", "curriculum_ppo", "verify", str(short_demo)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and cli.stdout.startswith("OK:"), cli.stdout + cli.stderr

    summary = json.loads(short_demo.with_name(make_long_demo.SUMMARY_NAME).read_text())
    assert summary["frames"] == SHORT and summary["total_return"] == demo.total_return
    assert summary["reward_events"] == len(demo.reward_events()) and summary["lives_lost"] == 0
    assert summary["verify_ok"] is True and summary["settings"]["max_frames"] == SHORT


def test_the_search_is_deterministic_keeps_every_life_and_the_script_replays_to_the_demo(short_demo):
    """A longer search in this process starts with the demo's actions (the same seed makes the same choices,
    and nothing rewinds that far back in a dense wall), and loses no life in 5,000 frames: the plain tracking
    player would lose its first ball before that."""
    from curriculum_ppo.demo.action_script import expand, read_action_script
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.emulator import Emulator

    demo = load_demo(short_demo)
    actions, stats = make_long_demo.search_actions(make_long_demo.Settings(max_frames=5000))
    assert len(actions) == 5000 and np.array_equal(np.asarray(actions[:SHORT], dtype=np.uint8), demo.actions)
    assert stats.decisions > 0 and stats.look_ahead_frames > 0
    emu = Emulator("breakout")
    lives = [emu.lives()]
    for action in actions:
        emu.step(action)
        lives.append(emu.lives())
    assert min(lives) == lives[0] == 5 and not emu.game_over()
    names = emu.action_names
    script = short_demo.with_name(make_long_demo.SCRIPT_NAME)
    assert expand(read_action_script(script, names)) == list(demo.actions)


def test_a_second_run_reuses_the_demo_and_other_settings_make_it_again(short_demo, tmp_path):
    stamp = short_demo.stat().st_mtime_ns
    again = _run("make_long_demo.py", "--max-frames", SHORT, "--out-dir", short_demo.parent, env_dir=tmp_path)
    assert again.returncode == 0 and "using the demo already made" in again.stderr
    assert short_demo.stat().st_mtime_ns == stamp

    other = tmp_path / "other"
    made = _run("make_long_demo.py", "--max-frames", 500, "--out-dir", other, "--no-verify", env_dir=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "using the demo" not in made.stderr and "(not verified)" in made.stdout
    assert json.loads((other / make_long_demo.SUMMARY_NAME).read_text())["frames"] == 500


def test_the_breakout_demo_starts_atari_envs_at_its_frames(short_demo):
    """The env stack is game-agnostic: a Breakout demo start puts the emulator exactly at the demo frame."""
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.envs.atari import AtariEnv

    demo = load_demo(short_demo)
    env = AtariEnv(demo=demo)
    for t in (0, 5, 1234, SHORT - 1):
        obs, info = env.reset(options={"start_frame": t})
        assert obs.shape == env.observation_space.shape and info["start_frame"] == t
        assert np.array_equal(env.emulator.ram(), demo.ram[t]), t
    obs, reward, terminated, truncated, info = env.step(int(demo.actions[SHORT - 1]))
    assert obs.shape == env.observation_space.shape


# -- the player and the pacing (pure) ------------------------------------------------------------
def test_reward_timeline_counts_gaps_before_between_and_after_rewards():
    rewards = np.zeros(100)
    rewards[[10, 20, 60]] = [1, 4, 7]
    timeline = make_long_demo.reward_timeline(rewards)
    assert timeline["reward_events"] == 3
    assert (timeline["first_reward_frame"], timeline["last_reward_frame"]) == (10, 60)
    assert timeline["longest_reward_free_gap"] == {"frames": 39, "from": 21, "to": 60}
    rewards[60] = 0
    assert make_long_demo.reward_timeline(rewards)["longest_reward_free_gap"] == {"frames": 79, "from": 21, "to": 100}


def test_landing_point_reflects_off_the_side_walls():
    lo, hi = make_long_demo.BALL_X_MIN, make_long_demo.BALL_X_MAX
    y = make_long_demo.PADDLE_BOUNCE_Y
    assert make_long_demo.landing_x(100, y - 10, 2, 2) == 110
    assert make_long_demo.landing_x(hi - 4, y - 10, 2, 2) == hi - 6  # 6 past the right wall comes back 6
    assert make_long_demo.landing_x(lo + 4, y - 10, -2, 2) == lo + 6
    assert make_long_demo.landing_x(100, 50, 2, -2) is None


def test_wanted_gap_paces_only_the_last_bricks_of_each_wall():
    settings = make_long_demo.Settings(frames=53_061, sparse_bricks=10, tail=525)
    dense_at = make_long_demo.BRICKS_PER_WALL - 10
    assert make_long_demo.wanted_gap(settings, 5_000, 0) is None
    assert make_long_demo.wanted_gap(settings, 5_000, dense_at - 1) is None
    first = make_long_demo.wanted_gap(settings, 9_000, dense_at)
    # 20 paced bricks and the second wall's dense ones still to come
    expected = (53_061 - 525 - 9_000 - dense_at * make_long_demo.DENSE_FRAMES_PER_BRICK) // 20
    assert first == expected
    assert make_long_demo.wanted_gap(settings, 9_000, make_long_demo.BRICKS_PER_WALL) is None
    late = make_long_demo.wanted_gap(settings, 52_000, 2 * make_long_demo.BRICKS_PER_WALL - 1)
    assert late == make_long_demo.LEAST_PACED_GAP  # behind the schedule: the least gap, not a negative one
    assert make_long_demo.wanted_gap(settings, 0, 2 * make_long_demo.BRICKS_PER_WALL) is None


def test_choose_offset_keeps_the_ball_and_paces_the_bricks():
    Outlook = make_long_demo.Outlook
    choose = make_long_demo.choose_offset
    lost = Outlook(True, None, None, ())
    calm = Outlook(False, None, 90, ())
    soon = Outlook(False, None, 90, (150,))
    double = Outlook(False, None, 90, (1500, 1520))
    hit = Outlook(False, None, 90, (1500,))
    table = {0: lost, 1: soon, 2: calm, 3: hit, 4: double}
    # unpaced: the first offset that keeps the ball
    assert choose([0, 1, 2], table.get, 1000, 900, None) == (1, "fits")
    # paced, gap still short: a brick now is too soon, a calm cycle fits
    assert choose([0, 1, 2, 3], table.get, 1000, 900, 1000) == (2, "fits")
    # paced, gap long enough by the next cycle: exactly one brick is wanted, not two
    assert choose([0, 2, 4, 3], table.get, 2000, 100, 1000) == (3, "fits")
    assert choose([0, 2, 4], table.get, 2000, 100, 1000) == (2, "calm")
    # nothing avoids an early brick: take it rather than lose the ball
    assert choose([0, 1], table.get, 1000, 900, 1000) == (1, "early")
    assert choose([0], table.get, 1000, 900, 1000) == (0, "no_safe_offset")
    # a brick already on its way before the next bounce counts as the last reward
    # (all candidates share it: the cycle before the next bounce is already decided)
    pending_then_soon, pending_then_calm = Outlook(False, 50, 90, (300,)), Outlook(False, 50, 90, ())
    assert choose([5, 6], {5: pending_then_soon, 6: pending_then_calm}.get, 5000, 100, 1000) == (6, "fits")


@pytest.mark.parametrize("args, flag", [(["--max-gap", "100"], "--max-gap"), (["--sparse-bricks", "200"], "--sparse-bricks"),
                                        (["--max-frames", "0"], "--max-frames")])
def test_make_long_demo_refuses_bad_settings_before_any_work(tmp_path, capsys, args, flag):
    with pytest.raises(SystemExit) as exit_info:
        make_long_demo.main([*args, "--out-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


# -- the oracle benchmark -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick_bench(short_demo, tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("episode_cost")
    path = out / "cost.json"
    result = _run("bench_episode_cost.py", "--quick", "--demo", short_demo, "--success-horizon", 1000,
                  "--json", path, env_dir=out / "bench")
    return result, json.loads(path.read_text()) if path.exists() else {}


def test_quick_bench_replay_succeeds_exactly_as_the_demo_did_and_standing_still_fails(quick_bench, short_demo):
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.episode_rules import success_stretches

    result, data = quick_bench
    assert result.returncode == 0, result.stdout + result.stderr
    assert data["all_checks_ok"] is True
    assert set(data["rules"]) == {"horizon", "demo_end", "demo_end_uncapped"}
    demo = load_demo(short_demo)
    episodes = data["episodes"]
    for rule in data["rules"]:
        replays = [e for e in episodes if e["rule"] == rule and e["agent"] == "replay"]
        assert len(replays) == 6 and all(e["success"] for e in replays), rule
        config = data["rules"][rule]
        from curriculum_ppo.episode_rules import EpisodeRulesConfig

        stretch = success_stretches(demo.cumulative_return, EpisodeRulesConfig(
            success_rule=config["success_rule"], success_horizon=config["success_horizon"]))
        assert [e["success_frame"] for e in replays] == [int(stretch[e["start"]]) for e in replays]
        noops = [e for e in episodes if e["rule"] == rule and e["agent"] == "noop" and e["region"] != "end"]
        assert noops and not any(e["success"] for e in noops), rule
        early = data["starts"]["start"] + data["starts"]["middle"]
        randoms = [data["random_by_start"][rule][str(t)] for t in early]
        assert sum(r["episodes"] for r in randoms) == 2 * len(early) and not any(r["successes"] for r in randoms), rule
    # Under the horizon rule an episode from near the start needs about H, not the whole remaining demo.
    horizon = {r["region"]: r for r in data["summary"] if r["rule"] == "horizon" and r["agent"] == "replay"}
    demo_end = {r["region"]: r for r in data["summary"] if r["rule"] == "demo_end_uncapped" and r["agent"] == "replay"}
    assert horizon["start"]["mean_frames_to_success"] < 0.6 * demo_end["start"]["mean_frames_to_success"]
    assert demo_end["start"]["mean_frames_to_success"] > 0.9 * demo_end["start"]["mean_demo_left"] - 200
    assert "replay frames to success" in result.stdout and "unreachable (horizon)" in result.stdout


def test_bench_episode_cost_reports_a_rule_that_cannot_reach_early_starts(short_demo, tmp_path):
    """With a cap shorter than what the demo needs, replay fails exactly at the starts the rule calls unreachable."""
    path = tmp_path / "cost.json"
    result = _run("bench_episode_cost.py", "--starts-per-region", 1, "--random-episodes", 0, "--demo", short_demo,
                  "--max-episode-frames", 1500, "--success-horizon", 500, "--json", path, env_dir=tmp_path)
    data = json.loads(path.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    message = data["unreachable_message"]["demo_end"]
    assert message and "can never succeed" in message and "--max-episode-frames" in message
    assert data["unreachable_message"]["demo_end_uncapped"] is None
    starts = [e for e in data["episodes"] if e["rule"] == "demo_end" and e["agent"] == "replay"]
    assert [(e["start"], e["success"]) for e in starts if e["region"] == "start"] == [(0, False)]
    assert all(e["reason"] == "max_frames" and e["frames"] == 1500 for e in starts if e["region"] == "start")
    assert data["checks"]["demo_end: replay succeeds where reachable"]["ok"]


def test_bench_episode_cost_bad_demo_is_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "cost.json"
    result = _run("bench_episode_cost.py", "--quick", "--demo", tmp_path / "nope.h5", "--json", path, env_dir=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_episode_cost: error:") and "nope.h5" in lines[0]
    assert not path.exists() and list(tmp_path.glob(".cost.json.*")) == []
