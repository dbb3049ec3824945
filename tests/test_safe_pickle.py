"""``safe_pickle``: plain data and numeric numpy arrays load exactly as :mod:`pickle` loads them; the rest is refused.

The hostile payloads are written opcode by opcode, as an attacker would
(:func:`demo_with` and the helpers above it), not produced by
:func:`pickle.dumps`. :data:`PAYLOADS` is shared with ``test_import_demo.py``,
which feeds every one of them to the real ``import-demo`` command.
"""

from __future__ import annotations

import gc
import pickle
import random
import resource
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

from curriculum_ppo.demo import safe_pickle
from curriculum_ppo.demo.safe_pickle import Limits, Malformed, Refused, Truncated, UntrustedPickleError

# --- a small pickle assembler ----------------------------------------------------------------------
PROTO4 = b"\x80\x04"
MARK, STOP, TUPLE, TUPLE1, TUPLE2, TUPLE3 = b"(", b".", b"t", b"\x85", b"\x86", b"\x87"
REDUCE, BUILD, NONE, FALSE, TRUE = b"R", b"b", b"N", b"\x89", b"\x88"
EMPTY_LIST, EMPTY_DICT, APPEND, APPENDS, SETITEM, STACK_GLOBAL = b"]", b"}", b"a", b"e", b"s", b"\x93"


def text(value: str) -> bytes:
    raw = value.encode()
    return b"\x8c" + bytes([len(raw)]) + raw if len(raw) < 256 else b"X" + struct.pack("<I", len(raw)) + raw


def raw_bytes(value: bytes) -> bytes:
    return b"C" + bytes([len(value)]) + value if len(value) < 256 else b"B" + struct.pack("<I", len(value)) + value


def integer(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def global_(module: str, name: str) -> bytes:
    return text(module) + text(name) + STACK_GLOBAL


def tuple_(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def dtype(name: str, order: str = "|", flags: int = 0, subarray: bytes = NONE, names: bytes = NONE,
          fields: bytes = NONE, elsize: int = -1, alignment: int = -1) -> bytes:
    """``numpy.dtype(name, False, True)`` followed by BUILD with the given state (numpy's is flags 0, Nones, -1s)."""
    state = tuple_(integer(3), text(order), subarray, names, fields, integer(elsize), integer(alignment),
                   integer(flags))
    return global_("numpy", "dtype") + text(name) + FALSE + TRUE + TUPLE3 + REDUCE + state + BUILD


#: ``_reconstruct(ndarray, (0,), b'b')``: an array whose state (BUILD) follows.
RECONSTRUCT = (global_("numpy.core.multiarray", "_reconstruct") + global_("numpy", "ndarray") + integer(0) + TUPLE1
               + raw_bytes(b"b") + TUPLE3 + REDUCE)


def array(dtype_ops: bytes, shape: tuple[int, ...], data: bytes) -> bytes:
    """:data:`RECONSTRUCT` followed by BUILD with (1, shape, dtype, False, data), as numpy writes arrays."""
    shape_ops = tuple_(*(b"\x8a\x08" + struct.pack("<q", d) for d in shape))
    return RECONSTRUCT + tuple_(integer(1), shape_ops, dtype_ops, FALSE, raw_bytes(data)) + BUILD


def scalar(dtype_ops: bytes, data: bytes) -> bytes:
    return global_("numpy.core.multiarray", "scalar") + dtype_ops + raw_bytes(data) + TUPLE2 + REDUCE


def demo_with(**entries: bytes) -> bytes:
    """A protocol-4 atari-reset dict: two actions and rewards, plus ``entries`` (each value given as opcodes)."""
    values = {"actions": EMPTY_LIST + MARK + integer(0) + integer(1) + APPENDS,
              "rewards": EMPTY_LIST + MARK + (b"G" + struct.pack(">d", 0.0)) * 2 + APPENDS}
    values.update(entries)
    body = b"".join(text(key) + value + SETITEM for key, value in values.items())
    return PROTO4 + EMPTY_DICT + body + STOP


POINTERS = b"\x41" * 16  # two "object pointers" 0x4141414141414141: dereferencing them crashes


def _call(func: bytes, *args: bytes) -> bytes:
    return func + tuple_(*args) + REDUCE


def _deep_lists(depth: int) -> bytes:
    return EMPTY_LIST * depth + APPEND * (depth - 1)


def _valid_demo_prefix() -> bytes:
    data = pickle.dumps({"actions": [0, 1] * 50, "rewards": [0.0] * 100,
                         "checkpoints": [np.arange(2000, dtype=np.uint8)]}, protocol=4)
    return data[:len(data) * 3 // 4]  # cut inside the checkpoint's raw bytes


#: name -> (hostile pickle, a phrase its refusal must contain). ``MARKER`` is replaced by a path by the callers.
PAYLOADS: dict[str, tuple[bytes, str]] = {
    # The two SIGSEGVs of issue 18: object dtypes whose flags say "no Python objects" over bytes from the file.
    "object dtype with changed flags in an array": (
        demo_with(rewards=array(dtype("O8", flags=0), (2,), POINTERS)), "numpy dtype 'O8' (object)"),
    "object scalar under an unread key": (
        demo_with(junk=scalar(dtype("O8", flags=0), POINTERS[:8])), "numpy dtype 'O8' (object)"),
    "plain dtype with object flags": (
        demo_with(rewards=array(dtype("f8", "<", flags=63), (2,), bytes(16))), "not numpy's standard"),
    "structured dtype": (
        demo_with(junk=array(dtype("V16", names=tuple_(text("a"), text("b")), elsize=16, alignment=1),
                             (1,), bytes(16))), "numpy dtype 'V16' (structured/void)"),
    "plain dtype name with a structured state": (
        demo_with(junk=array(dtype("f8", "<", names=tuple_(text("a")), fields=EMPTY_DICT), (2,), bytes(16))),
        "not numpy's standard"),
    "subarray dtype state": (
        demo_with(junk=array(dtype("u1", subarray=tuple_(dtype("f8", "<"), tuple_(integer(2)))), (1,),
                             bytes(16))), "not numpy's standard"),
    "huge claimed shape": (
        demo_with(rewards=array(dtype("f8", "<"), (10**12,), bytes(16))),
        "claims the shape (1000000000000,) of float64"),
    "huge claimed shape, protocol 5": (
        demo_with(junk=_call(global_("numpy._core.numeric", "_frombuffer"), b"\x96" + struct.pack("<Q", 8)
                             + bytes(8), dtype("u1"), tuple_(b"\x8a\x08" + struct.pack("<q", 2**40)), text("C"))),
        "claims the shape (1099511627776,) of uint8"),
    "lists nested 100,000 deep": (demo_with(junk=_deep_lists(100_000)), "nested more than 64 levels deep"),
    "marks nested 100,000 deep": (demo_with(junk=MARK * 100_000), "nested more than 64 levels deep"),
    "tuples nested 100,000 deep": (demo_with(junk=b")" + TUPLE1 * 100_000), "nested more than 64 levels deep"),
    "truncated stream": (_valid_demo_prefix(), "it ends at byte"),
    "os.system": (b"cos\nsystem\n(S'touch MARKER'\ntR.", "it references os.system,"),
    "builtins.getattr chain": (
        demo_with(junk=_call(_call(global_("builtins", "getattr"), _call(global_("builtins", "__import__"),
                                                                         text("os")), text("system")),
                             text("touch MARKER"))), "it references builtins.getattr,"),
    "dotted name through an allowed global": (
        demo_with(junk=_call(global_("numpy", "dtype.__init__.__globals__"), text("x"))),
        "it references numpy.dtype.__init__.__globals__,"),
}


def payload(name: str, marker="MARKER") -> bytes:
    return PAYLOADS[name][0].replace(b"MARKER", str(marker).encode())


# --- hostile input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_hostile_payload_is_refused_with_one_line(name, tmp_path):
    marker = tmp_path / "MARKER"
    with pytest.raises(UntrustedPickleError) as err:
        safe_pickle.loads(payload(name, marker))
    message = str(err.value)
    assert PAYLOADS[name][1] in message and "\n" not in message and len(message) < 400, message
    assert isinstance(err.value, Truncated if name == "truncated stream" else Refused)
    assert not marker.exists()


def test_huge_shape_is_refused_before_allocating():
    """The refusal comes from comparing sizes: tracemalloc sees no allocation of the claimed 8 TB (or any MB)."""
    data = payload("huge claimed shape")
    tracemalloc.start()
    with pytest.raises(Refused, match=r"1,000,000,000,000 elements \(8,000,000,000,000 bytes\), but carries 16"):
        safe_pickle.loads(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2**20


@pytest.mark.parametrize("name", ["object dtype with changed flags in an array", "object scalar under an unread key"])
def test_control_the_sigsegv_payloads_are_live_under_numpys_own_unpickling(name, tmp_path):
    """Control: plain ``pickle.loads`` (numpy's hooks) of these bytes kills the process with a signal.

    The refusals above therefore stop real memory corruption, not harmless bytes. A numpy that
    someday rejects the payload itself makes this test skip, not fail.
    """
    src = tmp_path / "payload.pkl"
    src.write_bytes(payload(name))
    code = textwrap.dedent(f"""
        import pickle, numpy as np
        d = pickle.loads(open({str(src)!r}, "rb").read())
        np.asarray(d["rewards"], dtype=np.float64)
        print("survived")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
    if proc.returncode > 0:
        pytest.skip(f"this numpy refuses the payload itself: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode < 0, (proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("name", ["lists nested 100,000 deep", "marks nested 100,000 deep",
                                  "tuples nested 100,000 deep"])
def test_deep_nesting_is_refused_while_parsing(name):
    """Refused as the 65th level is built, with most of the 100,000 levels never parsed or allocated."""
    data = payload(name)
    with pytest.raises(Refused, match=r"nested more than 64 levels deep \(at byte (\d+)\)") as err:
        safe_pickle.loads(data)
    stopped_at = int(str(err.value).rsplit("at byte ", 1)[1].rstrip(")"))
    assert stopped_at < len(data) - 50_000


def test_cycles_are_refused():
    looped = PROTO4 + EMPTY_LIST + b"\x94" + b"h\x00" + APPEND + STOP  # L = []; L.append(L)
    with pytest.raises(Refused, match="a list that contains itself"):
        safe_pickle.loads(looped)


def test_depth_is_checked_on_the_finished_value_too():
    """A list put inside 60 others and filled afterwards with 60 more levels: each step looked shallow."""
    wrapped = EMPTY_LIST * 60 + EMPTY_LIST + b"\x94" + APPEND * 60  # 60 lists around L (memo 0): depth 61
    refill = b"h\x00" + _deep_lists(60) + APPEND + b"0"  # then 60 more levels appended into L, and L popped
    data = PROTO4 + wrapped + refill + STOP
    with pytest.raises(Refused, match="nested more than 64 levels deep"):
        safe_pickle.loads(data)
    assert len(safe_pickle.loads(PROTO4 + _deep_lists(64) + STOP)) == 1  # 64 levels are fine


def test_memory_budget():
    """Each 1-byte EMPTY_DICT makes a 64-byte dict: past the factor, the load stops before going further."""
    small = Limits(memory_factor=32, memory_floor=0)
    with pytest.raises(Refused, match=r"more than 320,000 bytes of memory \(32x its 10,000 bytes"):
        safe_pickle.loads(PROTO4 + EMPTY_DICT * 9997 + STOP, small)
    ok = PROTO4 + EMPTY_DICT * 100 + STOP
    assert 64 * 100 <= safe_pickle.loads_with_stats(ok, Limits(memory_factor=100, memory_floor=0))[1].memory
    with pytest.raises(Refused, match="bytes of memory"):  # the default limits, floor included
        safe_pickle.loads(PROTO4 + EMPTY_DICT * 600_000 + STOP)


def test_dict_keys_are_limited_to_cheap_hashes():
    with pytest.raises(Refused, match="a tuple as a dict key"):
        safe_pickle.loads(pickle.dumps({(1, 2): 0}, protocol=4))
    with pytest.raises(Refused, match="an integer of 201 bits"):
        safe_pickle.loads(pickle.dumps({2**200: 0}, protocol=4))
    with pytest.raises(Refused, match="more than 10 dict keys or set elements that are not strings"):
        safe_pickle.loads(pickle.dumps({i: 0 for i in range(11)}, protocol=4), Limits(max_fixed_hash_keys=10))
    assert safe_pickle.loads(pickle.dumps({str(i): 0 for i in range(11)}), Limits(max_fixed_hash_keys=10))


@pytest.mark.parametrize("data, phrase", [
    (b"(S'ls'\nios\nsystem\n.", "it references os.system,"),  # INST
    (b"(cnumpy\nndarray\nK\x05o.", "OBJ"),
    (PROTO4 + global_("numpy", "ndarray") + EMPTY_LIST + b"\x81" + STOP, "NEWOBJ"),
    (_call(global_("numpy", "ndarray"), integer(10**9)) + STOP, "calls numpy.ndarray directly"),
    (PROTO4 + b"\x82\x01" + STOP, "extension registry"),
    (b"P1\n.", "persistent ids"),
    (b"\x80\x05\x97.", "out-of-band buffers"),
    (PROTO4 + _call(global_("builtins", "bytearray"), integer(10**9)) + STOP, "calls bytearray with (1000000000,)"),
    (PROTO4 + _call(global_("builtins", "bytes"), integer(10**9)) + STOP, "calls bytes with (1000000000,)"),
    (PROTO4 + _call(global_("_codecs", "encode"), text("x"), text("rot13")) + STOP, "only for latin-1"),
    (b"ccopy_reg\n_reconstructor\n.", "it references copy_reg._reconstructor,"),
    (PROTO4 + global_("numpy", "dtype") + STOP, "it uses numpy.dtype as a value (as the pickle's result)"),
    (PROTO4 + global_("numpy", "dtype") + TUPLE1 + STOP, "it holds numpy.dtype itself as a value"),
    (PROTO4 + EMPTY_LIST + global_("numpy", "dtype") + APPEND + STOP, "it uses numpy.dtype as a value"),
    (PROTO4 + RECONSTRUCT + STOP, "a numpy array before its state"),
    (PROTO4 + RECONSTRUCT + b"2" + STOP, "duplicated with DUP"),
    (PROTO4 + RECONSTRUCT + b"\x94" + b"h\x00" + STOP, "read back from the memo"),
    (PROTO4 + EMPTY_DICT + tuple_() + BUILD + STOP, "sets the state (BUILD) of a dict"),
    (PROTO4 + RECONSTRUCT + EMPTY_LIST + BUILD + STOP, "has the state [], not (version, shape, dtype, fortran"),
    (PROTO4 + RECONSTRUCT + tuple_(integer(1), tuple_(integer(2)), text("f8"), FALSE, raw_bytes(bytes(16)))
     + BUILD + STOP, "has the dtype 'f8', not a numpy dtype record"),
    (PROTO4 + RECONSTRUCT + tuple_(integer(1), tuple_(integer(1)), dtype("O8", flags=63), FALSE, EMPTY_LIST)
     + BUILD + STOP, "numpy dtype 'O8' (object)"),
    (PROTO4 + _call(global_("numpy.core.multiarray", "scalar"), dtype("O8", flags=63), EMPTY_LIST) + STOP,
     "numpy dtype 'O8' (object)"),
    (PROTO4 + scalar(dtype("f8", "|"), bytes(8)) + STOP, "not numpy's standard"),
    (PROTO4 + scalar(dtype("f8", "<"), bytes(4)) + STOP, "carries 4 bytes, not 8"),
    (PROTO4 + array(dtype("M8", "<"), (1,), bytes(8)) + STOP, "'M8' (datetime)"),
    (PROTO4 + array(dtype("U1", "<"), (1,), bytes(4)) + STOP, "'U1' (unicode)"),
    (PROTO4 + array(dtype("c16", "<"), (1,), bytes(16)) + STOP, "'c16' (complex)"),
])
def test_other_refusals(data, phrase):
    with pytest.raises(Refused) as err:
        safe_pickle.loads(data)
    assert phrase in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("data, error, phrase", [
    (b"", Truncated, "before the pickle's STOP opcode"),
    (b"\x80\x04\x95", Truncated, "inside FRAME"),
    (b"\x80\x06.", Malformed, "unsupported pickle protocol 6"),
    (b"this is not a pickle\n", Malformed, "needs a MARK"),
    (b"\xff", Malformed, "not a pickle opcode"),
    (b"X\x02\x00\x00\x00\xff\xfe.", Malformed, "UnicodeDecodeError"),
    (b"h\x05.", Malformed, "memo entry 5 is read before it is written"),
    (b"I" + b"9" * 5000 + b"\n.", Malformed, "ValueError"),
])
def test_malformed(data, error, phrase):
    with pytest.raises(error, match=phrase):
        safe_pickle.loads(data)


@pytest.mark.parametrize("protocol", range(6))
def test_every_prefix_of_a_pickle_is_truncated(protocol):
    data = pickle.dumps({"actions": [1, 300, -2, 2**70], "rewards": [0.5, np.float64(2)], "s": "é", "b": b"\x00",
                         "c": [np.arange(6, dtype=np.uint8).reshape(2, 3)]}, protocol=protocol)
    for cut in range(len(data)):
        with pytest.raises(Truncated):
            safe_pickle.loads(data[:cut])


def test_byte_flips_never_escape_as_anything_but_a_one_line_refusal():
    """Seeded mutations of valid pickles: each loads, or fails with UntrustedPickleError, quickly."""
    obj = {"actions": [1, 2, 300, -7], "rewards": [0.0, np.float64(1.0), 2**70], "s": "héllo", "b": b"\x00\x01",
           "checkpoints": [np.arange(30, dtype=np.uint8), np.asfortranarray(np.ones((2, 3))), np.array(True)],
           "t": (1, (2, 3)), "ba": bytearray(b"xy")}
    seeds = [pickle.dumps(obj, p) for p in range(6)]
    rng = random.Random(18)
    outcomes = {"loaded": 0, "Truncated": 0, "Malformed": 0, "Refused": 0}
    for _ in range(1500):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data) or 1)
            if rng.random() < 0.6 and data:
                data[pos] = rng.randrange(256)
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        start = time.perf_counter()
        try:
            safe_pickle.loads(bytes(data))
            outcomes["loaded"] += 1
        except UntrustedPickleError as exc:
            outcomes[type(exc).__name__] += 1
            assert "\n" not in str(exc)
        assert time.perf_counter() - start < 1.0
    assert all(outcomes.values()), outcomes  # every kind of outcome was exercised


# --- honest input loads exactly as pickle loads it ------------------------------------------------------
def assert_identical(a, b, path="value"):
    """Same types, values, dtypes, shapes, memory layout and writability, recursively."""
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, np.ndarray):
        assert (a.dtype, a.shape, a.dtype.byteorder) == (b.dtype, b.shape, b.dtype.byteorder), path
        assert (a.flags.c_contiguous, a.flags.f_contiguous) == (b.flags.c_contiguous, b.flags.f_contiguous), path
        assert a.tobytes(order="A") == b.tobytes(order="A") and b.flags.writeable, path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            assert_identical(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, float) and a != a:
        assert b != b, path
    else:
        assert a == b, (path, a, b)


def everything(protocol: int) -> dict:
    shared = [1, 2]
    obj = {
        "ints": [0, 1, -1, 255, 256, -5, -6, 65535, 65536, 2**31 - 1, -2**31, 2**31, 2**63, -2**100, 10**50],
        "floats": [0.0, -0.0, 1.5, float("inf"), float("nan"), 1e-300],
        "strs": ["", "a", "é", "日本", "😀x", "a\nb\\c'\"", "x" * 300],
        "bytes": [b"", b"\x00", bytes(range(256)), b"\n" * 300], "bytearrays": [bytearray(), bytearray(b"\xff" * 300)],
        "constants": [None, True, False], "tuples": ((), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((1,), [2])),
        "nested": [[[[1]]], {"k": {"j": []}}],
        "arrays": [(np.arange(24) % 3).astype(dt).reshape(2, 3, 4) for dt in list(safe_pickle.ALLOWED_DTYPES)
                   + [">f8", ">i4", ">u2"]],
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "zero-d": np.array(3.5),
        "empty": np.zeros((0, 5), np.int16), "strided": np.arange(10)[::2],
        "scalars": [np.dtype(d).type(7) for d in safe_pickle.ALLOWED_DTYPES] + [np.float64(-0.0), np.bool_(False)],
        "dtypes": [np.dtype("f8"), np.dtype(">i2"), np.dtype("u1")],
        "shared": [shared, shared, (shared,)], 7: "int key", 2.5: "float key", None: "None key", b"k": "bytes key",
    }
    if protocol >= 4:  # sets pickle as builtins.set calls before protocol 4 (refused, as before)
        obj.update(set={1, "a", b"b", None, 2.5}, frozenset=frozenset({1, 2}))
    return obj


@pytest.mark.parametrize("protocol", range(6))
def test_plain_data_loads_exactly_as_pickle_loads_it(protocol):
    data = pickle.dumps(everything(protocol), protocol=protocol)
    got = safe_pickle.loads(data)
    assert_identical(pickle.loads(data), got)
    assert got["shared"][0] is got["shared"][1] is got["shared"][2][0]  # shared references stay shared
    if protocol <= 2:  # numpy 1.x wrote numpy.core.* names
        old = data.replace(b"numpy._core.", b"numpy.core.")
        assert old != data
        assert_identical(pickle.loads(data), safe_pickle.loads(old))


def test_arrays_are_independent_copies():
    data = pickle.dumps([np.arange(2000, dtype=np.uint8)] * 2, protocol=5)
    a, b = safe_pickle.loads(data)
    assert a is b and a.flags.owndata and a.flags.writeable  # numpy's memoized array stays one object
    a[0] = 99
    assert pickle.loads(data)[0][0] == 0


def test_nothing_outlives_the_load_but_its_value():
    """The loader (the copy of the file, the memo, the side tables) is freed when the load returns.

    With the garbage collector off, a reference cycle would keep it alive: the 2 MB would stay traced.
    """
    data = pickle.dumps({"checkpoints": [np.zeros(2**20, np.uint8)], "actions": list(range(1000))}, protocol=4)
    gc.disable()
    tracemalloc.start()
    try:
        value = safe_pickle.loads(data)
        assert value["checkpoints"][0].nbytes == 2**20
        del value
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert peak > 2 * 2**20 and current < 2**16, (current, peak)


def realistic_demo(frames: int, checkpoint_bytes: int, *, numpy_signs: bool = False) -> dict:
    """An atari-reset dict laid out like the real files (per-frame lists, a uint8 checkpoint every 100 frames)."""
    rng = np.random.default_rng(0)
    rewards = [0.0] * frames
    for t in rng.integers(0, frames, 40):
        rewards[t] = 100.0
    signs = [np.sign(np.float64(r)) if numpy_signs else float(np.sign(r)) for r in rewards]
    return {"actions": rng.integers(0, 18, frames).tolist(), "rewards": rewards, "signed_rewards": signs,
            "lives": [5] * (frames + 1), "checkpoint_action_nr": list(range(0, frames, 100)),
            "checkpoints": [rng.integers(0, 256, checkpoint_bytes, dtype=np.uint8) for _ in range(0, frames, 100)]}


@pytest.mark.parametrize("layout", ["checkpoints", "small ints", "floats", "numpy scalars", "ints over 256"])
def test_memory_accounting_follows_what_the_load_really_allocates(layout):
    obj = {"checkpoints": realistic_demo(10_000, 8200), "small ints": {"a": [3] * 20_000},
           "floats": {"r": [float(i) for i in range(20_000)]},
           "numpy scalars": {"s": [np.float64(i) for i in range(20_000)]},
           "ints over 256": {"n": list(range(300, 20_300))}}[layout]
    data = pickle.dumps(obj, protocol=4)
    tracemalloc.start()
    value, stats = safe_pickle.loads_with_stats(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del value
    assert 0.9 * peak <= stats.memory <= 1.5 * peak, (stats.memory, peak)


def test_the_memory_factor_leaves_room_for_a_montezuma_sized_demo():
    """53,061 frames and 531 checkpoints of 8.2 KB (5.5 MB, like the real file): well under the factor."""
    data = pickle.dumps(realistic_demo(53_061, 8200), protocol=2)
    value, stats = safe_pickle.loads_with_stats(data)
    assert len(value["checkpoints"]) == 531 and 5e6 < len(data) < 9e6
    assert stats.memory_per_byte < Limits().memory_factor / 8, stats
    numpy_signs = pickle.dumps(realistic_demo(20_000, 0, numpy_signs=True), protocol=4)
    assert safe_pickle.loads_with_stats(numpy_signs)[1].memory_per_byte < Limits().memory_factor / 2
