"""Human-readable action scripts: one ``ACTION_NAME [repeat]`` per line.

Used by ``record --actions`` to make reproducible demos (the bundled
Montezuma's Revenge demo is one). ``#`` starts a comment; an action may also be
given as its minimal-set index (``3 10`` = action 3 for 10 frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from curriculum_ppo.errors import UserError


@dataclass(frozen=True)
class ScriptLine:
    line_number: int
    action: int
    repeat: int


def parse_action_script(text: str, action_names: list[str], source: str = "<script>") -> list[ScriptLine]:
    """Parse a script into (action index, repeat) lines; errors name the line."""
    upper = [n.upper() for n in action_names]
    lines: list[ScriptLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        body = raw.split("#", 1)[0].strip()
        if not body:
            continue
        parts = body.split()
        if len(parts) > 2:
            raise UserError(f"{source}:{number}: expected 'ACTION_NAME [repeat]', got '{body}'")
        token = parts[0]
        if token.removeprefix("-").isdecimal():
            action = int(token)
            if not 0 <= action < len(action_names):
                raise UserError(f"{source}:{number}: action index {action} is out of range 0..{len(action_names) - 1}")
        elif token.upper() in upper:
            action = upper.index(token.upper())
        else:
            raise UserError(f"{source}:{number}: unknown action '{token}'; this game's actions are {' '.join(action_names)}")
        repeat = 1
        if len(parts) == 2:
            if not parts[1].isdecimal() or int(parts[1]) < 1:
                raise UserError(f"{source}:{number}: repeat must be a positive integer, got '{parts[1]}'")
            repeat = int(parts[1])
        lines.append(ScriptLine(number, action, repeat))
    if not lines:
        raise UserError(f"{source}: the action script contains no actions")
    return lines


def read_action_script(path: str | Path, action_names: list[str]) -> list[ScriptLine]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"action script not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read action script {path}: {exc}") from None
    return parse_action_script(text, action_names, str(path))


def expand(lines: list[ScriptLine]) -> list[int]:
    return [line.action for line in lines for _ in range(line.repeat)]


def format_action_script(actions: list[int], action_names: list[str], header: str = "") -> str:
    """Inverse of :func:`parse_action_script` (run-length encoded)."""
    out = [f"# {h}" for h in header.splitlines()] if header else []
    i = 0
    while i < len(actions):
        j = i
        while j < len(actions) and actions[j] == actions[i]:
            j += 1
        out.append(f"{action_names[actions[i]]} {j - i}" if j - i > 1 else action_names[actions[i]])
        i = j
    return "\n".join(out) + "\n"
