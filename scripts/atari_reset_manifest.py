#!/usr/bin/env python
"""Record, or check, what ``import-demo`` gives for the human demos of openai/atari-reset.

The demos (``demos/*.demo`` of github.com/openai/atari-reset, MIT) are not in
this repository. ``tests/data/atari_reset_manifest.json`` says what importing
each one gives: the alignment shift, the frames, the return, and sha256 digests
of every value in the file as the loader reads it and of every array of the
imported demo. A change to the loader or the importer that changes any of
them shows up as a difference.

    python scripts/atari_reset_manifest.py DEMO [DEMO ...] [--force]
        import each file (into a temporary directory) and fill in the manifest's
        missing (null) values; a value already recorded that differs is reported
        and kept, unless --force replaces it. The manifest is written atomically.
        Exit 1 when a recorded value differed.

    python scripts/atari_reset_manifest.py --check DIR
        import every manifest file found in DIR and compare each recorded
        (non-null) value; exit 1 listing the differences, 2 when DIR holds none
        of the files. ``tests/test_atari_reset_manifest.py`` runs this when
        ``CURRICULUM_PPO_ATARI_RESET_DIR`` points at the files.

The game is the file name's stem (``MontezumaRevenge.demo``) unless the
manifest entry or ``--game`` says otherwise. ``--manifest`` picks another
manifest file (the tests use a temporary one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

from curriculum_ppo.atomic import write_text_atomic
from curriculum_ppo.demo import importers, safe_pickle
from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.emulator import ale_version
from curriculum_ppo.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "tests" / "data" / "atari_reset_manifest.json"

#: Every field of a manifest entry, in order. ``None`` in the manifest means "not measured yet".
FIELDS = ("game", "file_sha256", "file_frames", "file_return", "checked", "dropped_leading_reward_entry",
          "dropped_leading_lives_entry", "imports", "import_error", "shift", "other_matching_shifts", "frames",
          "total_return", "file_values", "imported_arrays", "load_memory_per_byte", "recorded_with")
#: Fields that describe the measurement rather than its result: recorded, never compared.
INFORMATIONAL = ("recorded_with",)
#: The manifest records load_memory_per_byte; the check only requires this margin under the loader's factor.
MEMORY_MARGIN = 2


# -- digests (pure) -------------------------------------------------------------------------------
def _feed(h, value) -> None:
    """Feed ``value`` into ``h`` with its type, so that 1, 1.0, np.int64(1) and True all differ."""
    pending = [value]
    while pending:
        v = pending.pop()
        if isinstance(v, np.ndarray):
            h.update(b"ndarray" + v.dtype.str.encode() + repr(v.shape).encode())
            h.update(np.ascontiguousarray(v).tobytes())
        elif isinstance(v, np.generic):
            h.update(b"npscalar" + v.dtype.str.encode() + v.tobytes())
        elif isinstance(v, (list, tuple)):
            h.update(f"{type(v).__name__}[{len(v)}]".encode())
            pending.extend(reversed(v))
        elif isinstance(v, dict):
            h.update(f"dict[{len(v)}]".encode())
            for key in reversed(sorted(v, key=repr)):
                pending.extend((v[key], key))
        elif isinstance(v, (bytes, bytearray)):
            h.update(type(v).__name__.encode() + struct.pack("<Q", len(v)) + bytes(v))
        elif isinstance(v, float):
            h.update(b"float" + struct.pack("<d", v))
        elif isinstance(v, (bool, int, str, type(None))):
            text = repr(v).encode()
            h.update(type(v).__name__.encode() + struct.pack("<Q", len(text)) + text)
        else:
            raise TypeError(f"cannot digest a {type(v).__name__}")


def value_digest(value) -> str:
    """sha256 of a loaded value: types, dtypes, shapes and contents (see :func:`_feed`)."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


# -- measuring one file -----------------------------------------------------------------------------
def measure(path: Path, game: str, max_shift: int = 8) -> dict:
    """Every field of :data:`FIELDS` for the demo at ``path``, as today's loader and importer give it.

    A file that no longer loads is a measurement too (``imports`` False, the reason in ``import_error``).
    """
    try:
        demo = importers.read_atari_reset(path)
        content = safe_pickle.loads(path.read_bytes())
    except UserError as exc:
        return {**dict.fromkeys(FIELDS), "game": game, "imports": False,
                "import_error": str(exc).replace(str(path), path.name)}
    result = {
        "game": game,
        "file_sha256": demo.sha256,
        "file_frames": len(demo),
        "file_return": float(demo.rewards.sum()),
        "checked": demo.checked,
        "dropped_leading_reward_entry": demo.dropped_leading_reward_entry,
        "dropped_leading_lives_entry": demo.dropped_leading_lives_entry,
        "file_values": {str(key): value_digest(value) for key, value in content.items()},
        "load_memory_per_byte": round(demo.load_stats.memory_per_byte, 3),
        "recorded_with": f"ale-py {ale_version()}, numpy {np.__version__}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "imported.h5"
        try:
            imported = importers.import_atari_reset(path, game, out, max_shift=max_shift, report=None)
        except UserError as exc:
            result.update(imports=False, import_error=str(exc).replace(str(path), path.name), shift=None,
                          other_matching_shifts=None, frames=None, total_return=None, imported_arrays=None)
            return result
        stored = load_demo(out)
        arrays = {"actions": stored.actions, "rewards": stored.rewards, "lives": stored.lives, "ram": stored.ram,
                  "state_frames": stored.state_frames, "states": list(stored.states)}
    result.update(imports=True, import_error=None, shift=imported.shift,
                  other_matching_shifts=[s for s in imported.matching_shifts if s != imported.shift],
                  frames=imported.frames, total_return=float(imported.total_return),
                  imported_arrays={name: value_digest(value) for name, value in arrays.items()})
    return result


# -- comparing (pure) ---------------------------------------------------------------------------------
def _same(recorded, measured) -> bool:
    if isinstance(recorded, float) or isinstance(measured, float):
        return (isinstance(recorded, (int, float)) and isinstance(measured, (int, float))
                and math.isclose(recorded, measured, rel_tol=1e-9, abs_tol=1e-9))
    return recorded == measured


def differences(name: str, recorded: dict, measured: dict) -> list[str]:
    """One line per recorded (non-null) value that the measurement contradicts."""
    lines = []
    for key in FIELDS:
        want, got = recorded.get(key), measured.get(key)
        if want is None or key in INFORMATIONAL:
            continue
        if key == "load_memory_per_byte":
            if got is None:  # the file did not load: the other fields say so
                continue
            limit = safe_pickle.Limits().memory_factor / MEMORY_MARGIN
            if got > limit:
                lines.append(f"{name}: loading took {got}x the file's size in memory, more than {limit:g}x "
                             f"(half the loader's factor): recalibrate safe_pickle.Limits.memory_factor")
            continue
        if isinstance(want, dict) and isinstance(got, dict):
            lines.extend(f"{name}: {key}[{part!r}]: recorded {want[part]}, measured {got.get(part)}"
                         for part in want if want[part] is not None and want[part] != got.get(part))
            lines.extend(f"{name}: {key}[{part!r}]: not recorded, measured {got[part]}"
                         for part in got if part not in want)
        elif not _same(want, got):
            lines.append(f"{name}: {key}: recorded {want!r}, measured {got!r}")
    return lines


def merge(recorded: dict, measured: dict, force: bool) -> dict:
    """``recorded`` with its missing values (and, with ``force``, all values) taken from ``measured``."""
    merged = {}
    for key in FIELDS:
        want, got = recorded.get(key), measured.get(key)
        if isinstance(want, dict) and isinstance(got, dict) and not force:
            merged[key] = {**got, **{k: v for k, v in want.items() if v is not None}}
        else:
            merged[key] = got if (force or want is None or key in INFORMATIONAL) else want
    return merged


# -- I/O -----------------------------------------------------------------------------------------------
def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return {"files": {}}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the manifest {path}: {exc}") from None
    if not isinstance(manifest.get("files"), dict):
        raise UserError(f"the manifest {path} has no 'files' object")
    return manifest


def update(paths: list[Path], manifest_path: Path, game: str | None, force: bool, max_shift: int) -> int:
    manifest = read_manifest(manifest_path)
    for path in paths:
        if not path.is_file():
            raise UserError(f"demo file not found: {path}")
    if game is not None and len(paths) != 1:
        raise UserError("--game names the game of one file; give one DEMO with it")
    status = 0
    for path in paths:
        recorded = manifest["files"].get(path.name, {})
        measured = measure(path, game or recorded.get("game") or path.stem, max_shift)
        diffs = differences(path.name, recorded, measured)
        for line in diffs:
            print(("replaced: " if force else "kept the recorded value; ") + line)
        status |= bool(diffs) and not force
        manifest["files"][path.name] = merge(recorded, measured, force)
        print(f"{path.name}: shift {measured['shift']}, {measured['frames']} frames, "
              f"return {measured['total_return']}" if measured["imports"] else
              f"{path.name}: does not import ({measured['import_error']})")
    write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {manifest_path}")
    return status


def check(directory: Path, manifest_path: Path, max_shift: int) -> int:
    if not directory.is_dir():
        raise UserError(f"--check {directory}: not a directory")
    files = read_manifest(manifest_path)["files"]
    present = [name for name in files if (directory / name).is_file()]
    if not present:
        print(f"none of the manifest's files ({', '.join(files)}) are in {directory}", file=sys.stderr)
        return 2
    lines = []
    for name in present:
        recorded = files[name]
        lines += differences(name, recorded, measure(directory / name, recorded.get("game") or Path(name).stem,
                                                     max_shift))
    for line in lines:
        print(line)
    missing = [name for name in files if name not in present]
    print(f"{len(present)} of {len(files)} files checked" + (f" ({', '.join(missing)} not in {directory})"
                                                           if missing else "")
          + (f": {len(lines)} differences" if lines else ": all recorded values match"))
    return 1 if lines else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demos", nargs="*", type=Path, help="atari-reset .demo files to record")
    parser.add_argument("--check", type=Path, metavar="DIR", help="compare the files in DIR with the manifest")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help=f"default: {MANIFEST.relative_to(ROOT)}")
    parser.add_argument("--game", help="the game of the one DEMO given (default: its file name's stem)")
    parser.add_argument("--force", action="store_true", help="replace recorded values that differ")
    parser.add_argument("--max-shift", type=int, default=8, help="as import-demo's --max-shift (default 8)")
    args = parser.parse_args(argv)
    if bool(args.demos) == bool(args.check):
        parser.error("give DEMO files to record, or --check DIR")
    if args.check:
        return check(args.check, args.manifest, args.max_shift)
    return update(args.demos, args.manifest, args.game, args.force, args.max_shift)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"atari_reset_manifest: error: {exc}", file=sys.stderr)
        sys.exit(2)
