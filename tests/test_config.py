"""The training config is the one source of ``curriculum-ppo train``'s flags: names, defaults, help,
validation and what ``--resume`` may change (real parser, real dataclasses, real config files)."""

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from curriculum_ppo import config_flags
from curriculum_ppo.curriculum import CurriculumConfig
from curriculum_ppo.errors import UserError
from curriculum_ppo.ppo.learner import PPOConfig
from curriculum_ppo.train_cli import add_train_parser, build_config, flag_tables
from curriculum_ppo.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent

# Every flag of `curriculum-ppo train` as it was before the flags were generated: none may go or be renamed.
TODAYS_FLAGS = {
    "--arch", "--checkpoint-every", "--clip", "--compile", "--config", "--decision-front", "--demo", "--device",
    "--ent-coef", "--env-groups", "--epochs", "--explore-epsilon", "--explore-fraction", "--explore-steps",
    "--frames", "--front-half-life", "--gae-lambda", "--game", "--gamma", "--groups-by-worker", "--lag-allowance",
    "--learner-steps-envs", "--lr", "--max-episode-frames", "--min-episodes", "--minibatches", "--minutes",
    "--no-curriculum", "--no-overlap", "--num-envs", "--obs", "--random-start-fraction", "--recurrent", "--resume",
    "--run-dir", "--seed", "--spin-wait-us", "--status-every", "--steps", "--stop-at-success", "--success-horizon",
    "--success-rule", "--success-threshold", "--threads", "--unstick-decay", "--unstick-patience", "--warmup-steps",
    "--window", "--workers",
}
# What `--resume` let change before: nothing else may change on a resumed run.
TODAYS_RUNTIME = {"--minutes", "--stop-at-success", "--frames", "--device", "--workers", "--env-groups",
                  "--learner-steps-envs", "--groups-by-worker", "--spin-wait-us", "--front-half-life",
                  "--status-every", "--threads", "--checkpoint-every", "--no-overlap", "--compile"}
# Flags added since, each a runtime knob: how a run executes, not what it learns.
ADDED_FLAGS = {"--cpu-bf16"}
# Flags added since that change what a run learns (opt-in levers of issue #22): --resume may not change them.
ADDED_LEARNING_FLAGS = {"--adaptive-step", "--explore-temperature", "--demo-bc-coef", "--demo-bc-samples",
                        "--demo-bc-ahead"}


def train_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_train_parser(sub)
    return parser, sub.choices["train"]


def parse(tmp_path, *flags):
    parser, _ = train_parser()
    return parser.parse_args(["train", "--run-dir", str(tmp_path / "run"), *flags])


def test_the_train_command_keeps_every_flag_it_had():
    _, train = train_parser()
    flags = {s for action in train._actions for s in action.option_strings if s.startswith("--")} - {"--help"}
    assert flags == TODAYS_FLAGS | ADDED_FLAGS | ADDED_LEARNING_FLAGS


def test_only_the_runtime_flags_are_marked_runtime():
    runtime = {k.flag.name for k in config_flags.knobs(TrainConfig) if k.flag.runtime}
    assert runtime == TODAYS_RUNTIME | ADDED_FLAGS


def test_every_flag_help_shows_its_fields_default():
    _, train = train_parser()
    helps = {s: action.help for action in train._actions for s in action.option_strings}
    knobs = list(config_flags.knobs(TrainConfig))
    assert len(knobs) == len(TODAYS_FLAGS | ADDED_FLAGS | ADDED_LEARNING_FLAGS) - 6  # all but --demo, --game, --run-dir, --resume, --config, --no-curriculum
    for knob in knobs:
        default = knob.default
        section = TrainConfig() if len(knob.path) == 1 else getattr(TrainConfig(), knob.path[0])
        assert getattr(section, knob.path[-1]) == default  # the field's default is the config's
        assert helps[knob.flag.name].endswith(f"(default: {knob.shown_default()})".replace("%", "%%"))
    # Rendered from the field, in the flag's units:
    assert helps["--lr"].endswith("(default: 0.00025)")
    assert helps["--frames"].endswith("(default: 10,000,000)")
    assert helps["--max-episode-frames"].endswith("(default: 18,000)")
    assert "demo start" in helps["--max-episode-frames"] and "episode rules" in helps["--max-episode-frames"]
    assert helps["--window"].endswith("(default: 64)") and helps["--front-half-life"].endswith("(default: 64)")
    assert helps["--success-rule"].endswith("(default: horizon)")
    assert helps["--minutes"].endswith("(default: no limit)") and helps["--stop-at-success"].endswith("(default: off)")
    assert helps["--workers"].endswith("(default: one per CPU core, at most --num-envs)")
    assert helps["--no-overlap"].endswith("(default: off)") and helps["--compile"].endswith("(default: off)")


def test_the_help_is_generated_from_the_field_not_retyped():
    """A made-up config: the flag's type, default and help follow the field alone."""

    @dataclasses.dataclass
    class Section:
        rate: float = config_flags.knob(0.125, flag="--rate", help="a rate")

    @dataclasses.dataclass
    class Config:
        count: int = config_flags.knob(12_345, flag="--count", group="g", help="a count")
        seconds: float | None = config_flags.knob(90.0, flag="--minutes", group="g", help="minutes",
                                                  parse=lambda v: float(v) * 60, show=lambda s: f"{s / 60:g}")
        on: bool = config_flags.knob(True, flag="--off", group="g", help="switch it off")
        section: Section = dataclasses.field(default_factory=Section)

    parser = argparse.ArgumentParser()
    config_flags.add_flags(parser, Config, ("g",), {"section": "g"})
    helps = {a.option_strings[0]: a.help for a in parser._actions if a.option_strings}
    assert helps["--count"] == "a count (default: 12,345)" and helps["--rate"] == "a rate (default: 0.125)"
    assert helps["--minutes"] == "minutes (default: 1.5)" and helps["--off"] == "switch it off (default: off)"
    args = parser.parse_args(["--count", "7", "--minutes", "2", "--off", "--rate", "0.5"])
    values = {".".join(k.path): v for k, v in config_flags.given(args, Config)}
    assert values == {"count": 7, "seconds": 120.0, "on": False, "section.rate": 0.5}
    assert config_flags.apply({"count": 1, "section": {"other": 3}}, config_flags.given(args, Config)) == {
        "count": 7, "seconds": 120.0, "on": False, "section": {"other": 3, "rate": 0.5}}
    assert config_flags.given(parser.parse_args([]), Config) == []  # nothing given: the config's own defaults


def test_no_flags_give_the_dataclass_defaults(tmp_path):
    config = build_config(parse(tmp_path))
    assert config == dataclasses.replace(TrainConfig(), demo=str(ROOT / "demos" / "MontezumaRevenge-room1.h5"))


def test_every_flag_sets_its_field_with_its_type_and_meaning(tmp_path):
    args = parse(
        tmp_path, "--frames", "5000", "--minutes", "2", "--stop-at-success", "0.5", "--num-envs", "4",
        "--workers", "2", "--env-groups", "2", "--learner-steps-envs", "--groups-by-worker", "--spin-wait-us", "100",
        "--steps", "16", "--seed", "9", "--device", "cpu", "--threads", "3", "--no-overlap", "--compile",
        "--cpu-bf16",
        "--status-every", "0.5", "--checkpoint-every", "7", "--arch", "large", "--recurrent", "--obs", "rgb105x80",
        "--warmup-steps", "2", "--lr", "5e-4", "--ent-coef", "0.01", "--gamma", "0.9", "--gae-lambda", "0.8",
        "--epochs", "3", "--minibatches", "2", "--clip", "0.2", "--window", "32", "--adaptive-step",
        "--success-threshold", "0.3",
        "--random-start-fraction", "0.1", "--decision-front", "0.5", "--min-episodes", "16",
        "--front-half-life", "8", "--lag-allowance", "40", "--max-episode-frames", "9000",
        "--success-rule", "demo_end", "--success-horizon", "1000", "--unstick-patience", "1000",
        "--unstick-decay", "0.25", "--explore-epsilon", "0.1", "--explore-temperature", "2",
        "--explore-steps", "4", "--explore-fraction", "0.25",
        "--demo-bc-coef", "0", "--demo-bc-samples", "16", "--demo-bc-ahead", "32",  # 0: --recurrent refuses cloning
        "--demo", "x.h5", "--game", "pong")
    assert {k.flag.name for k, _ in config_flags.given(args, TrainConfig)} == {
        k.flag.name for k in config_flags.knobs(TrainConfig)}  # every knob's flag is on this command line
    got = build_config(args).to_dict()
    want = {
        "total_frames": 5000, "max_seconds": 120.0, "stop_at_success": 0.5, "num_envs": 4, "num_workers": 2,
        "env_groups": 2, "learner_steps_envs": True, "groups_by_worker": True, "spin_wait_us": 100.0,
        "num_steps": 16, "seed": 9, "device": "cpu", "torch_threads": 3, "overlap": False, "compile": True,
        "status_every": 0.5, "checkpoint_every": 7, "arch": "large", "recurrent": True, "demo": "x.h5", "game": "pong",
        "atari": {"obs_mode": "rgb105x80", "warmup_steps": 2},
        "ppo": {"lr": 5e-4, "ent_coef": 0.01, "gamma": 0.9, "gae_lambda": 0.8, "num_epochs": 3, "num_minibatches": 2,
                "clip_coef": 0.2, "cpu_bf16": True},
        "curriculum": {"window": 32, "adaptive_step": True, "success_threshold": 0.3, "random_start_fraction": 0.1,
                       "decision_front": 0.5, "min_episodes": 16, "front_half_life": 8.0},
        "rules": {"lag_allowance": 40, "max_episode_frames": 9000, "success_rule": "demo_end",
                  "success_horizon": 1000},
        "unstick": {"patience_frames": 1000, "decay": 0.25},
        "explore": {"epsilon": 0.1, "temperature": 2.0, "steps": 4, "fraction": 0.25},
        "imitation": {"coef": 0.0, "samples": 16, "ahead": 32},
    }
    for key, value in want.items():
        if isinstance(value, dict):
            for name, v in value.items():
                assert got[key][name] == v and type(got[key][name]) is type(v), (key, name, got[key][name])
        else:
            assert got[key] == value and type(got[key]) is type(value), (key, got[key])
    given = {k.flag.name for k, _ in config_flags.given(parse(tmp_path, "--lr", "1"), TrainConfig)}
    assert given == {"--lr"}


def test_precedence_defaults_then_config_file_then_flags(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"version": 3, "num_envs": 4, "ppo": {"lr": 1e-3, "ent_coef": 0.02}, "demo": "a.h5"}))
    config = build_config(parse(tmp_path, "--config", str(path), "--lr", "5e-4"))
    assert config.num_envs == 4 and config.ppo.lr == 5e-4 and config.ppo.ent_coef == 0.02 and config.demo == "a.h5"
    assert config.ppo.gamma == PPOConfig().gamma and config.num_steps == TrainConfig().num_steps
    path.write_text(json.dumps({"ppo": 5}))
    with pytest.raises(UserError, match="config section 'ppo' must be a JSON object"):
        build_config(parse(tmp_path, "--config", str(path), "--lr", "5e-4"))
    with pytest.raises(UserError, match="config section 'ppo' must be a JSON object"):
        build_config(parse(tmp_path, "--config", str(path)))
    path.write_text(json.dumps({"ppo": {"lr": 1e-3, "lrr": 1}}))
    with pytest.raises(UserError, match="unknown config keys in 'ppo': lrr"):
        build_config(parse(tmp_path, "--config", str(path)))


def test_validation_sees_the_flag_values(tmp_path):
    """The config is constructed once, from the final values: the sections' own cross-field rules see flags."""
    with pytest.raises(UserError, match=r"collapse min episodes \(2048\) must be >= min episodes \(4096\)"):
        build_config(parse(tmp_path, "--min-episodes", "4096"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"curriculum": {"collapse_min_episodes": 16}}))
    with pytest.raises(UserError, match=r"collapse min episodes \(16\) must be >= min episodes \(32\)"):
        build_config(parse(tmp_path, "--config", str(path)))
    assert build_config(parse(tmp_path, "--config", str(path), "--min-episodes", "8")).curriculum.min_episodes == 8
    for flags, message in ((["--lr", "0"], "--lr must be positive"),
                           (["--epochs", "0"], "--epochs and --minibatches must be positive"),
                           (["--num-envs", "2", "--steps", "2"], "batch smaller than --minibatches"),
                           (["--window", "0"], "--window must be positive"),
                           (["--success-threshold", "0"], "--success-threshold must be in (0, 1]"),
                           (["--decision-front", "1.5"], "--decision-front must be in (0, 1]"),
                           (["--unstick-decay", "1"], "--unstick-decay must be in (0, 1)"),
                           (["--max-episode-frames", "0"], "--max-episode-frames must be >= 1"),
                           (["--frames", "0"], "--frames must be positive"),
                           (["--workers", "-1"], "--workers must be >= 0"),
                           (["--steps", "0"], "--steps must be positive")):
        with pytest.raises(UserError) as error:
            build_config(parse(tmp_path, *flags))
        assert message in str(error.value), (flags, str(error.value))


def test_random_start_fraction_is_in_zero_to_one_open(tmp_path):
    """[0, 1): with 1 no episode would start in the window once it moved, so the curriculum could not move on."""
    assert CurriculumConfig(random_start_fraction=0.0).random_start_fraction == 0.0
    assert CurriculumConfig(random_start_fraction=0.999).random_start_fraction == 0.999
    for bad in (1.0, -0.01):
        with pytest.raises(UserError, match=r"--random-start-fraction must be in \[0, 1\)"):
            CurriculumConfig(random_start_fraction=bad)
    assert build_config(parse(tmp_path, "--random-start-fraction", "0")).curriculum.random_start_fraction == 0.0
    with pytest.raises(UserError, match=r"--random-start-fraction must be in \[0, 1\)"):
        build_config(parse(tmp_path, "--random-start-fraction", "1"))


def test_stop_at_success_zero_means_off(tmp_path):
    assert build_config(parse(tmp_path, "--stop-at-success", "0")).stop_at_success is None
    assert TrainConfig(stop_at_success=0).stop_at_success is None


def test_resume_changes_only_runtime_knobs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = dataclasses.replace(TrainConfig(demo="saved.h5", num_envs=4), ppo=PPOConfig(lr=1e-3)).to_dict()
    (run / "config.json").write_text(json.dumps({"version": 3, **saved}))
    config = build_config(parse(tmp_path, "--resume", "--frames", "999", "--minutes", "1", "--no-overlap",
                                "--front-half-life", "0", "--workers", "0", "--demo", "other.h5"))
    assert config.total_frames == 999 and config.max_seconds == 60.0 and not config.overlap
    assert config.curriculum.front_half_life == 0 and config.num_workers == 0
    assert config.demo == "saved.h5" and config.num_envs == 4 and config.ppo.lr == 1e-3  # the run's own settings
    for flag, value in (("--lr", "0.1"), ("--num-envs", "2"), ("--recurrent", None), ("--window", "8")):
        with pytest.raises(UserError) as error:
            build_config(parse(tmp_path, "--resume", *[flag] + ([value] if value else [])))
        message = str(error.value)
        assert message.startswith("--resume keeps the run's settings; only --checkpoint-every, --compile, --cpu-bf16, --device")
        assert message.endswith(f"may change (got {flag})")


def test_docs_list_the_generated_flags():
    """docs/training.md holds the generated tables (regenerate: python -m curriculum_ppo.train_cli)."""
    assert flag_tables() in (ROOT / "docs" / "training.md").read_text()


def test_the_real_command_builds_train_flags_only_when_train_runs():
    """`curriculum-ppo train --help` shows the generated flags; other commands do not import torch to build them."""
    result = subprocess.run([sys.executable, "-m", "curriculum_ppo", "train", "--help"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0 and "--lr LR" in result.stdout and "(default: 0.00025)" in result.stdout
    probe = ("import sys; from curriculum_ppo.cli import build_parser; "
             "args = build_parser().parse_args(['verify', 'x.h5']); print(args.command, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.stdout.split() == ["verify", "False"], result.stderr


def test_a_config_of_an_older_version_loads_with_the_env_time_limit_renamed():
    """Before the env's hard cap and the episode rules' limit had distinct names, both were ``max_episode_frames``."""
    config = TrainConfig.from_dict({"atari": {"max_episode_frames": 5000}, "rules": {"max_episode_frames": 900}})
    assert config.atari.time_limit_frames == 5000 and config.rules.max_episode_frames == 900
    with pytest.raises(UserError, match="unknown config keys in 'atari': max_frames"):
        TrainConfig.from_dict({"atari": {"max_frames": 5000}})
