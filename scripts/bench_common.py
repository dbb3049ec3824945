"""What the benchmark scripts share: where results go by default, atomic JSON/PNG writes, a busy-machine check.

A script run without an explicit output path writes under ``runs/bench/<script>/``: git-ignored, and
kept between runs, so a resumable benchmark resumes. The committed figures under ``scripts/results/``
change only when a command names them (``--json``, ``--out-dir``, ``--png``). The environment variable
``CURRICULUM_PPO_BENCH_DIR`` moves the ``runs/bench`` root (tests use it to stay out of the checkout).

A timing is only as good as the machine was quiet: :class:`LoadCheck` reads the load average before
a run and what other processes used during it, warns in one line on stderr when the machine was busy,
and gives a record for the script's JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from curriculum_ppo.atomic import atomic_path, write_text_atomic
from curriculum_ppo.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR_ENV = "CURRICULUM_PPO_BENCH_DIR"
COMMITTED_RESULTS = ROOT / "scripts" / "results"
BACKGROUND_CORES = 0.5
"""Load from other processes that a quiet machine still has (daemons, this shell, the check itself)."""


# -- where results go ----------------------------------------------------------------------------
def bench_root() -> Path:
    """``runs/bench`` of this checkout, or ``$CURRICULUM_PPO_BENCH_DIR`` when set."""
    return Path(os.environ.get(BENCH_DIR_ENV) or ROOT / "runs" / "bench")


def bench_dir(script: str) -> Path:
    """The default output directory of ``script`` (created): ``runs/bench/<script>/``."""
    path = bench_root() / script
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the default output directory {path}: {exc.strerror or exc}; "
                        f"name an output path, or set {BENCH_DIR_ENV}") from None
    return path


def default_output(script: str, name: str) -> Path:
    """The file ``name`` in ``script``'s default output directory."""
    return bench_dir(script) / name


# -- atomic writes -------------------------------------------------------------------------------
def write_json(path: str | os.PathLike, data) -> None:
    """Write ``data`` as indented JSON; a crash or full disk leaves the old file (or none), never half of one."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
    """``fig.savefig`` through a temporary file renamed over ``path`` once complete (format from the suffix)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, format=fmt, **savefig_kwargs)


# -- is the machine busy? ------------------------------------------------------------------------
def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), which is what a benchmark can use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def allowed_other_load(cores_used: float, cores_total: float) -> float:
    """How much load other processes may add before they take cores the benchmark uses.

    The cores the benchmark leaves free, plus the background a quiet machine has.
    """
    return max(0.0, cores_total - cores_used) + BACKGROUND_CORES


def busy_warning(script: str, load_before: Sequence[float] | None, others_during: float | None,
                 allowed: float, cores_used: float, cores_total: float) -> str | None:
    """One line saying why the machine was too busy for a trustworthy timing, or None when it was quiet.

    ``load_before``: the 1/5/15-minute load averages before the run (nothing of the benchmark running
    yet, so all of it is other processes'). ``others_during``: the cores other processes used on average
    during the run (the load average after the run is no measure of them: it counts the benchmark's own
    threads, and a training loop keeps more threads runnable than it has cores). Busy when the measure
    is above ``allowed`` (:func:`allowed_other_load`). The load average before the run decides only where
    ``others_during`` could not be measured: it is a decaying average, so right after another benchmark
    ended it still counts that one, which no longer competes.
    """
    if others_during is not None:
        if others_during <= allowed:
            return None
        reason = f"other processes used {others_during:.2f} cores during it"
    elif load_before is not None and load_before[0] > allowed:
        reason = f"load average {load_before[0]:.2f} before the run"
    else:
        return None
    return (f"{script}: warning: the machine is busy ({reason}; this run uses "
            f"{cores_used:g} of {cores_total:g} cores, so more than {allowed:.2f} from others slows it): "
            f"these timings are not trustworthy")


def read_load() -> tuple[float, float, float] | None:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except (AttributeError, OSError):
        return None


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat; steal included: other VMs on the host)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (workers, subprocesses)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class LoadCheck:
    """Call :meth:`start` before the timed work and :meth:`finish` after it (its child processes ended).

    ``cores_used``: the cores the benchmark keeps busy. The sources are parameters so that a caller
    can read them from elsewhere; the decision itself is :func:`busy_warning`.
    """

    def __init__(self, script: str, cores_used: float, cores_total: float | None = None,
                 read_load: Callable[[], Sequence[float] | None] = read_load,
                 machine_busy: Callable[[], float | None] = machine_busy_seconds,
                 own_cpu: Callable[[], float] = own_cpu_seconds, clock: Callable[[], float] = time.monotonic):
        self.script, self.cores_used = script, cores_used
        self.cores_total = cores_total if cores_total is not None else usable_cores()
        self._read_load, self._machine_busy, self._own_cpu, self._clock = read_load, machine_busy, own_cpu, clock
        self.record: dict = {}

    def start(self) -> LoadCheck:
        self._t0, self._busy0, self._own0 = self._clock(), self._machine_busy(), self._own_cpu()
        self.record = {"load_average_before": self._read_load()}
        return self

    def finish(self, warn: bool = True, stream=None) -> dict:
        """Measure since :meth:`start`, print the warning (to ``stream``, default stderr) if the machine
        was busy and ``warn``, and return the record for the JSON."""
        wall = self._clock() - self._t0
        busy = self._machine_busy()
        others = None
        if busy is not None and self._busy0 is not None and wall > 0:
            others = max(0.0, (busy - self._busy0) - (self._own_cpu() - self._own0)) / wall
        allowed = allowed_other_load(self.cores_used, self.cores_total)
        warning = busy_warning(self.script, self.record["load_average_before"], others, allowed, self.cores_used,
                               self.cores_total)
        self.record.update({"load_average_after": self._read_load(),
                            "other_processes_cores_during": None if others is None else round(others, 3),
                            "cores_used": self.cores_used, "cores": self.cores_total,
                            "allowed_other_load": allowed, "busy": warning is not None, "warning": warning})
        if warning and warn:
            print(warning, file=stream or sys.stderr, flush=True)
        return self.record


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def prepare_outputs(script: str, json_path: Path | None, png_path: Path | None) -> tuple[Path, Path]:
    """The JSON path (default under runs/bench/SCRIPT/) and the PNG beside it, checked writable before long work.

    Exits with one line (``SCRIPT: error: ...``) when either cannot be written.
    """
    from curriculum_ppo.atomic import check_destination

    try:
        json_path = json_path if json_path is not None else default_output(script, f"{script}.json")
        png_path = png_path if png_path is not None else json_path.with_suffix(".png")
        for path, flag in ((json_path, "--json"), (png_path, "--png")):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the directory of {flag} {path}: {exc.strerror or exc}") from None
            check_destination(path, flag)
    except UserError as exc:
        raise SystemExit(f"{script}: error: {exc}") from None
    return json_path, png_path
