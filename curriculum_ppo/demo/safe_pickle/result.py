"""The last check of a load, on the finished value: only allowed leaves, no cycles, nesting within the limit."""

from __future__ import annotations

import itertools

import numpy as np

from curriculum_ppo.demo.safe_pickle.errors import Refused
from curriculum_ppo.demo.safe_pickle.limits import CONTAINERS
from curriculum_ppo.demo.safe_pickle.markers import _Global, describe

_LEAVES = (int, float, bool, type(None), str, bytes, bytearray, np.ndarray)


def _check_leaf(value) -> None:
    if type(value) in _LEAVES or isinstance(value, (np.generic, np.dtype)):
        return
    if type(value) is _Global:
        raise Refused(f"it holds {value!r} itself as a value, not the result of calling it")
    raise Refused(f"it holds {describe(value)} as a value")


def _children(node):
    return itertools.chain(node.keys(), node.values()) if type(node) is dict else iter(node)


def check_result(root, max_depth: int) -> None:
    """The finished value: no markers left, no container that contains itself, at most ``max_depth`` deep.

    Lists and dicts can be filled after they were put inside others, so the
    depth tracked while loading can be stale; this walk is exact. It is an
    iterative depth-first search (no recursion), and each container is visited
    once however often it is shared.
    """
    if type(root) not in CONTAINERS:
        _check_leaf(root)
        return
    heights: dict[int, int] = {}
    on_path = {id(root)}
    path = [[root, _children(root), 0]]  # node, its remaining children, the height of its tallest child so far
    while path:
        frame = path[-1]
        for child in frame[1]:
            if type(child) not in CONTAINERS:
                _check_leaf(child)
                continue
            key = id(child)
            if key in on_path:
                raise Refused(f"it holds a {type(child).__name__} that contains itself")
            height = heights.get(key)
            if height is None:
                if len(path) >= max_depth:
                    raise Refused(f"its data is nested more than {max_depth} levels deep")
                on_path.add(key)
                path.append([child, _children(child), 0])
                break
            frame[2] = max(frame[2], height)
        else:
            path.pop()
            node = frame[0]
            on_path.discard(id(node))
            heights[id(node)] = frame[2] + 1
            if path:
                path[-1][2] = max(path[-1][2], frame[2] + 1)
