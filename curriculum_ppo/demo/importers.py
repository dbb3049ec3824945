"""Import demonstrations recorded with OpenAI's atari-reset / atari-demo tools.

Those tools save a **pickle** of a dict::

    actions               list[int]    minimal-action-set index, one per emulator frame (N)
    rewards               list[float]  reward of each action (N; some files carry one extra
                                       leading entry, N + 1, which is dropped)
    signed_rewards        list[float]  optional, sign of each reward
    lives                 list[int]    optional, lives before each action and at the end (N + 1;
                                       N + 2 = an extra leading entry, which is dropped)
    checkpoints           list[uint8 array]  emulator states every 100 frames, serialized by an
                                       older ALE/Stella: they cannot be restored and are not used
    checkpoint_action_nr  list[int]    frame number of each checkpoint

**Loading.** A pickle can run arbitrary code while it loads, and numpy's own
pickle hooks can be fed dtype states that make numpy read the file's bytes as
object pointers, so the file never reaches :mod:`pickle` or numpy's
unpickling code. :mod:`curriculum_ppo.demo.safe_pickle` parses it in pure
Python and rebuilds every array itself from (shape, a plain numeric dtype, raw
bytes); any other global (``os.system``, ``builtins.getattr``, ...), object or
structured dtypes, non-standard dtype states, and files that would need more
memory or nesting than a demo can need are refused with one line naming the
file and what was found. Python 2 ``str`` loads as latin-1 text (numpy's own
recommendation for Python 2 pickles). The per-frame lists must hold plain
numbers (checked before they are converted to arrays, so a list of many
references to one large array is refused instead of being expanded).

**Re-recording.** The demo is replayed with the current emulator from a fresh
reset through :class:`DemoBuilder`, exactly like ``record --actions``, and the
replayed rewards (and lives, when the file has them) are compared with the
file's, frame by frame.

**Alignment.** Older ALE versions emulated a different number of frames inside
``reset``, so the file's frame 0 may not be our frame 0. A *shift* ``s`` says
where the file's frames fall in our replay: file frame ``t`` (before action
``t``) is replay frame ``t + s``.

* ``s > 0``: the old reset ran ``s`` frames more than ours. We first play ``s``
  NOOPs (action 0), then the file's actions; the reward the file records for
  action ``t`` is expected from replay action ``t + s`` (``s`` frames later), the
  NOOPs themselves must earn nothing, and the lives the file records at frame
  ``t`` are expected at replay frame ``t + s``.
* ``s < 0``: the old reset ran ``|s|`` frames fewer, so the file's first ``|s|``
  actions fell on frames that our reset already emulated. They are dropped
  (they must have earned nothing); file action ``t`` is replay action ``t - |s|``.

Every ``s`` in ``[-max_shift, +max_shift]`` is tried. A candidate is replayed
only until its first divergence from the file (early exit), and all candidates
with ``s >= 0`` branch from one shared chain of NOOPs played once from reset.
A shift *matches* when it reproduces the file's reward timeline (and lives)
over the whole demo. Several shifts can match - Montezuma's Revenge, for
instance, only moves the player every other frame, so ``s`` and ``s + 2``
often give the same rewards - and then the smallest ``|s|`` wins; at equal
``|s|`` prepending NOOPs wins over dropping the file's actions, and the other
matching shifts are reported. If none matches, nothing is written and the error
names the frame where the best candidate (the one that got furthest) diverged.

Not done: re-synchronizing from the file's own ``checkpoints`` (they are old
Stella states this ALE cannot restore).
"""

from __future__ import annotations

import hashlib
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curriculum_ppo.demo import safe_pickle
from curriculum_ppo.demo.store import Demo, DemoBuilder, save_demo
from curriculum_ppo.emulator import Emulator, EmulatorSettings, display_name, resolve_game
from curriculum_ppo.errors import UserError

IMPORTER_NAME = "atari-reset"
NOOP = 0


# -- loading the pickle -------------------------------------------------------------------
#: (module, name) a demo pickle may reference (see :mod:`curriculum_ppo.demo.safe_pickle`).
ALLOWED_GLOBALS = safe_pickle.ALLOWED_GLOBALS
#: Larger files are refused before they are read (atari-reset demos are a few MB).
MAX_FILE_BYTES = 256 * 2**20


def restricted_loads_with_stats(data: bytes, source: str = "the file") -> tuple[object, safe_pickle.LoadStats]:
    """Load an untrusted pickle with :mod:`~curriculum_ppo.demo.safe_pickle`; any failure is a one-line UserError."""
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        raise UserError(f"{source} is an HDF5 file (a curriculum_ppo demo already?); "
                        f"import-demo reads atari-reset pickles")
    if data[:2] == b"\x1f\x8b":
        raise UserError(f"{source} is gzip-compressed; decompress it first (gunzip)")
    try:
        return safe_pickle.loads_with_stats(data)
    except safe_pickle.Refused as exc:
        raise UserError(f"refusing to load {source}: {exc}; nothing in it was executed") from None
    except safe_pickle.Truncated as exc:
        raise UserError(f"{source} is not a complete pickle (truncated: {exc})") from None
    except safe_pickle.Malformed as exc:
        raise UserError(f"{source} is not a readable atari-reset pickle (truncated or corrupt: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - nothing from the file ran; any other failure is bad data too
        raise UserError(f"{source} is not a readable atari-reset pickle ({type(exc).__name__}: "
                        f"{_one_line(exc)})") from None


def restricted_loads(data: bytes, source: str = "the file"):
    """The value of an untrusted demo pickle (see :func:`restricted_loads_with_stats`)."""
    return restricted_loads_with_stats(data, source)[0]


_KEY_REPR = reprlib.Repr()
_KEY_REPR.maxstring = _KEY_REPR.maxother = 40


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


# -- the file's contents --------------------------------------------------------------------
@dataclass
class AtariResetFile:
    """An atari-reset demo as read from its pickle, normalized (see the module docstring)."""

    path: Path
    sha256: str
    actions: np.ndarray  # int64 [N]
    rewards: np.ndarray  # float64 [N]
    signed_rewards_only: bool  # True: ``rewards`` are signs (the file had only signed_rewards)
    lives: np.ndarray | None  # int64 [N + 1] or None
    dropped_leading_reward_entry: bool = False
    dropped_leading_lives_entry: bool = False
    notes: list[str] = field(default_factory=list)
    num_checkpoints: int = 0
    load_stats: safe_pickle.LoadStats | None = None  # what loading the pickle used

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def checked(self) -> str:
        rewards = "signed_rewards" if self.signed_rewards_only else "rewards"
        return f"{rewards}+lives" if self.lives is not None else rewards


#: What a per-frame list may hold: numbers only (no containers, no arrays beyond 0-d ones).
_NUMBERS = (int, float, np.integer, np.floating, np.bool_)


def _numeric_vector(value, key: str, source: str, dtype) -> np.ndarray:
    if isinstance(value, (list, tuple)):
        for t, x in enumerate(value):
            if not (isinstance(x, _NUMBERS) or (isinstance(x, np.ndarray) and x.ndim == 0)):
                raise UserError(f"{source}: '{key}' is not a flat list of numbers "
                                f"(entry {t} is a {type(x).__name__})")
    elif not isinstance(value, np.ndarray):
        raise UserError(f"{source}: '{key}' is not a list of numbers (it is a {type(value).__name__})")
    try:
        array = np.asarray(value)
        if array.dtype == object:
            array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UserError(f"{source}: '{key}' is not a list of numbers ({_one_line(exc)})") from None
    if array.ndim != 1 or array.dtype.kind not in "biuf":
        raise UserError(f"{source}: '{key}' is not a flat list of numbers "
                        f"(got {array.dtype} values of shape {array.shape})")
    if not np.all(np.isfinite(array.astype(np.float64))):
        raise UserError(f"{source}: '{key}' contains NaN or infinite values")
    if np.issubdtype(dtype, np.integer) and array.dtype.kind == "f":
        if not np.all(array == np.round(array)):
            t = int(np.flatnonzero(array != np.round(array))[0])
            raise UserError(f"{source}: '{key}' must hold whole numbers; entry {t} is {array[t]}")
    return array.astype(dtype)


def _read_file(path: Path, source: str) -> bytes:
    """The file's bytes, refused when it is missing, a directory, empty or larger than a demo can be."""
    if not path.exists():
        raise UserError(f"demo file not found: {source}")
    if path.is_dir():
        raise UserError(f"{source} is a directory, not an atari-reset demo pickle")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read {source}: {exc.strerror or exc}") from None
    if not data:
        raise UserError(f"{source} is empty")
    if len(data) > MAX_FILE_BYTES:
        raise UserError(f"{source} is larger than {MAX_FILE_BYTES // 2**20} MiB; atari-reset demos are a few MB")
    return data


def _demo_dict(content, source: str) -> tuple[dict, str]:
    """The pickle's dict with text keys (Python 2 files may have bytes keys), and its keys for messages."""
    if not isinstance(content, dict):
        raise UserError(f"{source} holds a {type(content).__name__}, not an atari-reset demo "
                        f"(a dict with 'actions', 'rewards', 'lives', ...)")
    keys = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in content.items()}
    shown = ", ".join(sorted(_KEY_REPR.repr(k) for k in keys)[:8]) or "none"
    return keys, shown


def _read_actions(keys: dict, shown: str, source: str, num_actions: int | None, game_name: str) -> np.ndarray:
    """The file's actions, at least one, each in the game's minimal action set when its size is given."""
    if "actions" not in keys:
        raise UserError(f"{source} is not an atari-reset demo: its dict has no 'actions' (keys: {shown})")
    actions = _numeric_vector(keys["actions"], "actions", source, np.int64)
    if len(actions) == 0:
        raise UserError(f"{source} holds no actions")
    if num_actions is not None:
        bad = np.flatnonzero((actions < 0) | (actions >= num_actions))
        if bad.size:
            t = int(bad[0])
            raise UserError(f"{source}: action {int(actions[t])} at frame {t} is out of range for "
                            f"{game_name}'s minimal action set of {num_actions} actions (0..{num_actions - 1})"
                            + (f"; {bad.size} actions are out of range" if bad.size > 1 else ""))
    return actions


def _read_rewards(keys: dict, shown: str, source: str, n: int) -> tuple[np.ndarray, bool, bool]:
    """(rewards for the ``n`` actions, whether they are only signs, whether a leading entry was dropped)."""
    signed_only = False
    if keys.get("rewards") is not None:
        rewards = _numeric_vector(keys["rewards"], "rewards", source, np.float64)
    elif keys.get("signed_rewards") is not None:
        rewards = _numeric_vector(keys["signed_rewards"], "signed_rewards", source, np.float64)
        signed_only = True
    else:
        raise UserError(f"{source} has no 'rewards' (nor 'signed_rewards'); the importer needs them "
                        f"to check its replay (keys: {shown})")
    key = "signed_rewards" if signed_only else "rewards"
    dropped_reward = False
    if len(rewards) == n + 1:
        rewards, dropped_reward = rewards[1:], True
    elif len(rewards) != n:
        raise UserError(f"{source}: '{key}' has {len(rewards)} entries for {n} actions "
                        f"(expected {n}, or {n + 1} with a leading entry)")
    return rewards, signed_only, dropped_reward


def _read_lives(keys: dict, source: str, n: int, notes: list[str]) -> tuple[np.ndarray | None, bool]:
    """(lives before each of the ``n`` actions and at the end, whether a leading entry was dropped).

    Lives are optional: unusable ones are ignored, with a line in ``notes``.
    """
    if keys.get("lives") is None:
        notes.append("the file has no lives; only rewards are checked")
        return None, False
    try:
        lives = _numeric_vector(keys["lives"], "lives", source, np.int64)
    except UserError as exc:
        notes.append(f"lives ignored ({exc})")
        return None, False
    if len(lives) == n + 2:
        return lives[1:], True
    if len(lives) != n + 1:
        notes.append(f"lives ignored: {len(lives)} entries for {n} actions (expected {n + 1})")
        return None, False
    return lives, False


def read_atari_reset(path: str | Path, num_actions: int | None = None, game_name: str = "the game") -> AtariResetFile:
    """Read and check an atari-reset pickle (without replaying it)."""
    path = Path(path)
    source = str(path)
    data = _read_file(path, source)
    content, stats = restricted_loads_with_stats(data, source)
    keys, shown = _demo_dict(content, source)
    actions = _read_actions(keys, shown, source, num_actions, game_name)
    n = len(actions)
    rewards, signed_only, dropped_reward = _read_rewards(keys, shown, source, n)
    notes: list[str] = []
    lives, dropped_lives = _read_lives(keys, source, n, notes)
    checkpoints = keys.get("checkpoints")
    return AtariResetFile(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        actions=actions,
        rewards=rewards,
        signed_rewards_only=signed_only,
        lives=lives,
        dropped_leading_reward_entry=dropped_reward,
        dropped_leading_lives_entry=dropped_lives,
        notes=notes,
        num_checkpoints=len(checkpoints) if isinstance(checkpoints, (list, tuple)) else 0,
        load_stats=stats,
    )


# -- alignment -------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One alignment tried: ``shift`` (see the module docstring) and where it first diverged."""

    shift: int
    diverged_at: int | None = None  # file frame of the first divergence; None = matches all frames
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.diverged_at is None


def describe_shift(s: int) -> str:
    if s > 0:
        return f"+{s} leading NOOP{'s' if s != 1 else ''}"
    if s < 0:
        return f"the file's first {-s} action{'s' if s != -1 else ''} dropped"
    return "no shift"


def _preference(s: int) -> tuple[int, int]:
    """Smallest |s| first; at equal |s| prepending NOOPs before dropping the file's actions."""
    return abs(s), int(s < 0)


def _reward_mismatch(got: float, want: float, signed: bool) -> bool:
    if signed:
        return float(np.sign(got)) != float(np.sign(want))
    return abs(got - want) > 1e-6 * max(1.0, abs(want))


def _try_shift(emu: Emulator, demo: AtariResetFile, s: int, reset_state: bytes,
               noop_chain: list[tuple[bytes, float]]) -> Candidate:
    """Replay the file with shift ``s`` until its first divergence (or the end)."""
    n = len(demo)
    signed = demo.signed_rewards_only
    recorded = "the file's signed_rewards record" if signed else "the file records"
    # Plain lists: the per-frame loop below then costs little next to the emulation.
    actions, rewards = demo.actions.tolist(), demo.rewards.tolist()
    lives = None if demo.lives is None else demo.lives.tolist()

    if s > 0:
        # Shared work: the state after s NOOPs from reset, and what those NOOPs earned.
        for k in range(s):
            if noop_chain[k][1] != 0.0:
                return Candidate(s, 0, f"prepended NOOP {k} earns reward {noop_chain[k][1]:g}")
        emu.restore_state(noop_chain[s][0])
        start = 0
    else:
        start = -s
        if start >= n:
            return Candidate(s, 0, f"dropping {start} actions leaves none of the file's {n}")
        earned = [t for t in range(start) if rewards[t] != 0.0]
        if earned:
            t = earned[0]
            return Candidate(s, t, f"dropped action {t} earned reward {rewards[t]:g} in the file")
        emu.restore_state(reset_state)

    ale, action_set = emu.ale, emu.actions
    if lives is not None and ale.lives() != lives[start]:
        return Candidate(s, start, f"lives are {ale.lives()} at frame {start}, the file records {lives[start]}")
    act = ale.act
    for t in range(start, n):
        reward = float(act(action_set[actions[t]]))
        if reward != rewards[t] and _reward_mismatch(reward, rewards[t], signed):
            return Candidate(s, t, f"action {t} gives reward {reward:g}, {recorded} {rewards[t]:g}")
        if lives is not None and ale.lives() != lives[t + 1]:
            return Candidate(s, t, f"after action {t} lives are {ale.lives()}, the file records {lives[t + 1]}")
    return Candidate(s)


@dataclass
class Alignment:
    best: Candidate
    candidates: list[Candidate]  # in order of preference

    @property
    def matching(self) -> list[int]:
        return [c.shift for c in self.candidates if c.ok]


def find_alignment(game: str, demo: AtariResetFile, max_shift: int = 8, emulator: Emulator | None = None) -> Alignment:
    """Try every shift in ``[-max_shift, max_shift]``; see the module docstring.

    ``emulator``, if given, must be freshly created (at its reset frame); it is used up.
    """
    if max_shift < 0:
        raise UserError(f"--max-shift must be 0 or more, got {max_shift}")
    emu = emulator if emulator is not None else Emulator(EmulatorSettings(resolve_game(game)))
    reset_state = emu.save_state()
    noop_chain: list[tuple[bytes, float]] = []  # (state after k NOOPs, reward of NOOP k), k = 0..max_shift
    for _ in range(max_shift + 1):
        state = emu.save_state()
        noop_chain.append((state, emu.step(NOOP)))

    shifts = sorted(range(-max_shift, max_shift + 1), key=_preference)
    candidates = [_try_shift(emu, demo, s, reset_state, noop_chain) for s in shifts]
    matching = [c for c in candidates if c.ok]
    if matching:
        best = matching[0]
    else:  # the candidate that reproduced the file longest; ties by preference
        best = max(candidates, key=lambda c: c.diverged_at)
    return Alignment(best, candidates)


def replay_plan(demo: AtariResetFile, s: int) -> tuple[list[int], np.ndarray, np.ndarray | None]:
    """The actions to replay for shift ``s`` and the rewards/lives the replay must produce."""
    if s >= 0:
        actions = [NOOP] * s + demo.actions.tolist()
        rewards = np.concatenate([np.zeros(s), demo.rewards])
        lives = None if demo.lives is None else demo.lives  # compared from replay frame s on
    else:
        actions = demo.actions[-s:].tolist()
        rewards = demo.rewards[-s:]
        lives = None if demo.lives is None else demo.lives[-s:]
    return actions, rewards, lives


# -- the command -------------------------------------------------------------------------------
@dataclass
class ImportResult:
    out: Path
    shift: int
    matching_shifts: list[int]
    frames: int  # frames in the imported demo
    file_frames: int  # actions in the file
    total_return: float
    checked: str
    message: str


def _format_shifts(shifts: list[int]) -> str:
    return ", ".join(f"{s:+d}" for s in shifts)


def _check_out(out: Path) -> None:
    """``--out`` must name a file in an existing directory."""
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as demo.h5")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise UserError(f"cannot write {out}: directory {out.parent} does not exist")


def _no_alignment(demo: AtariResetFile, best: Candidate, max_shift: int) -> UserError:
    """The error when no shift reproduces the file: where the best candidate diverged, and why."""
    return UserError(
        f"no alignment in -{max_shift}..+{max_shift} frames reproduces {demo.path} on this emulator: "
        f"the best candidate ({describe_shift(best.shift)}) first diverges at frame {best.diverged_at} "
        f"of {len(demo)}: {best.reason} (a larger --max-shift may help if the recording emulator's reset "
        f"differed more; nothing was written)")


def _re_record(game_id: str, demo: AtariResetFile, s: int) -> Demo:
    """Replay the file with shift ``s`` on a fresh emulator, recording it; the recording must match the file."""
    actions, rewards, lives = replay_plan(demo, s)
    builder = DemoBuilder(Emulator(EmulatorSettings(game_id)))
    for a in actions:
        builder.step(a)
    # The search already compared every frame; this re-checks the recording itself.
    got = np.asarray(builder.rewards)
    mismatch = [_reward_mismatch(g, w, demo.signed_rewards_only) for g, w in zip(got, rewards)]
    lives_got = np.asarray(builder.lives)[max(s, 0):]
    if any(mismatch) or (lives is not None and not np.array_equal(lives_got, lives)):
        raise RuntimeError("the emulator is not deterministic: the re-recording differs from the aligned replay")
    return builder.build()


def _import_detail(demo: AtariResetFile, s: int, max_shift: int, others: list[int]) -> dict:
    """What the import did, saved as the demo's ``source_detail``."""
    return {
        "importer": IMPORTER_NAME,
        "file": demo.path.name,
        "sha256": demo.sha256,
        "file_frames": len(demo),
        "leading_noop_shift": s,
        "prepended_noops": max(s, 0),
        "dropped_leading_actions": max(-s, 0),
        "dropped_leading_reward_entry": demo.dropped_leading_reward_entry,
        "dropped_leading_lives_entry": demo.dropped_leading_lives_entry,
        "checked": demo.checked,
        "max_shift": max_shift,
        "other_matching_shifts": others,
        "file_checkpoints": demo.num_checkpoints,
        "checkpoints_used": False,
    }


def _import_message(demo: AtariResetFile, s: int, others: list[int], out: Path, recorded: Demo) -> str:
    """What the import did, for the user: the alignment, what was checked, and every adjustment."""
    n = len(demo)
    what = "rewards and lives" if demo.lives is not None else "rewards"
    if demo.signed_rewards_only:
        what = what.replace("rewards", "reward signs")
    aligned = "aligned with no shift" if s == 0 else (
        f"aligned with {describe_shift(s)}" if s > 0 else f"aligned with {describe_shift(s)} ({s:+d})")
    over = f"all {n} frames" if s >= 0 else f"frames {-s}..{n} of {n} (the dropped actions earn nothing)"
    parts = [f"imported {demo.path.name}: {aligned}; {what} match over {over} -> {out} "
             f"({len(recorded)} frames, total return {recorded.total_return:g})"]
    if others:
        parts.append(f"shifts {_format_shifts(others)} also reproduce the file; chose {s:+d}, the smallest |shift|"
                     + (" (prepending NOOPs before dropping actions)" if -s in others else ""))
    if demo.dropped_leading_reward_entry:
        parts.append(f"dropped the leading entry of the file's {n + 1} rewards")
    if demo.dropped_leading_lives_entry:
        parts.append(f"dropped the leading entry of the file's {n + 2} lives")
    parts.extend(demo.notes)
    if demo.num_checkpoints:
        parts.append(f"the file's {demo.num_checkpoints} checkpoints (old emulator states) were not used")
    return "\n  ".join(parts)


def import_atari_reset(src: str | Path, game: str, out: str | Path, *, max_shift: int = 8,
                       report: Callable[[str], None] | None = print) -> ImportResult:
    """``curriculum-ppo import-demo SRC --game GAME --out OUT``: import, align, re-record, save.

    Raises :class:`UserError` (and writes nothing) when the file is unsafe,
    unreadable or malformed, or when no shift reproduces it.
    """
    game_id = resolve_game(game)
    if max_shift < 0:
        raise UserError(f"--max-shift must be 0 or more, got {max_shift}")
    out = Path(out)
    _check_out(out)
    search_emulator = Emulator(EmulatorSettings(game_id))
    demo = read_atari_reset(src, search_emulator.num_actions, display_name(game_id))
    alignment = find_alignment(game_id, demo, max_shift, search_emulator)
    if not alignment.best.ok:
        raise _no_alignment(demo, alignment.best, max_shift)
    s = alignment.best.shift
    recorded = _re_record(game_id, demo, s)
    others = [x for x in alignment.matching if x != s]
    save_demo(recorded, out, source="imported", detail=_import_detail(demo, s, max_shift, others))
    message = _import_message(demo, s, others, out, recorded)
    if report is not None:
        report(message)
    return ImportResult(out, s, alignment.matching, len(recorded), len(demo), recorded.total_return, demo.checked,
                        message)
