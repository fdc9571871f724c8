"""The restricted unpickler: data comes back, code does not run."""

from __future__ import annotations

import collections
import gc
import io
import os
import pickle
import subprocess

import numpy as np
import pytest

from nncli import safe_pickle
from nncli.errors import CheckpointError, NncliError
from nncli.safe_pickle import UnsafePickleError


def roundtrip(obj, protocol):
    return safe_pickle.load(io.BytesIO(pickle.dumps(obj, protocol=protocol)), what="test data")


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_data_round_trips(protocol):
    obj = {
        "weights": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fortran": np.asfortranarray(np.ones((2, 3), np.float64)),
        "labels": np.array([3, 1], np.int64),
        "step": np.int64(7), "lr": np.float32(0.1),
        "names": ["W", "b"], "shape": (1, 28, 28), "flags": {True, False},
        "frozen": frozenset({1}), "blob": b"\x00\xff", "order": collections.OrderedDict(a=1),
        "none": None, "complex": 1 + 2j,
    }
    back = roundtrip(obj, protocol)
    assert back.keys() == obj.keys()
    for key, value in obj.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(back[key], value)
            assert back[key].dtype == value.dtype
        else:
            assert back[key] == value and type(back[key]) is type(value)


class Exploit:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    ("func", "args", "name"),
    [
        (os.system, ("true",), "system"),
        (subprocess.Popen, (["true"],), "Popen"),  # "commands.Popen" in protocol 2
        (eval, ("1",), "(builtins|__builtin__)\\.eval"),
        (exec, ("1",), "(builtins|__builtin__)\\.exec"),
        (getattr, ("x", "upper"), "(builtins|__builtin__)\\.getattr"),
        (__import__, ("os",), "(builtins|__builtin__)\\.__import__"),
        (open, ("/etc/passwd",), "io.open"),
    ],
)
@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_code_is_refused_before_it_runs(func, args, name, protocol):
    payload = pickle.dumps({"w": np.zeros(2), "x": Exploit(func, *args)}, protocol=protocol)
    with pytest.raises(UnsafePickleError, match=rf"refusing to load test data: it asks for \S*{name}"):
        safe_pickle.load(io.BytesIO(payload), what="test data")


def test_the_error_class_can_be_chosen():
    payload = pickle.dumps(Exploit(os.system, "true"))
    with pytest.raises(CheckpointError, match="refusing to load checkpoint runs/x.pkl"):
        safe_pickle.load(io.BytesIO(payload), what="checkpoint runs/x.pkl", error=CheckpointError)
    assert issubclass(UnsafePickleError, NncliError)


def test_codecs_encode_only_decodes_latin1():
    # _codecs.encode("abc", "rot13"), as protocol 2 would spell bytes with another codec.
    payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(UnsafePickleError, match=r"it asks for _codecs.encode\(str, 'rot13'\)"):
        safe_pickle.load(io.BytesIO(payload), what="test data")


@pytest.mark.parametrize("cut", [1, 10, -1])
def test_truncated_or_garbage_is_one_error(cut):
    payload = pickle.dumps({"w": np.zeros(100)}, protocol=2)[:cut]
    with pytest.raises(UnsafePickleError, match="cannot read test data: it is not a valid pickle"):
        safe_pickle.load(io.BytesIO(payload), what="test data")


@pytest.mark.parametrize(
    "data",
    [
        # CPython prints "SystemError: deallocated bytearray object has exported buffers" for
        # these (found by fuzzing): the only output must be the one error
        b"\x80\x05\x96\x00\x00\x00\x00\x00\x00\x00\x00\x96X0\x8fh\x01\x90sh\x010\x8f\x95",
        b"\x80\x05(\x96\x00\x00\x00\x00\x00\x00\x00\x00\x96=\x03Y\x00{.h\x00(\x94\x8f\x95\x98",
        # a bytearray of 2**40 bytes: a MemoryError, whose own message is empty
        b"\x80\x05\x96" + (2**40).to_bytes(8, "little") + b"abc",
    ],
)
def test_crafted_pickles_give_one_error_and_print_nothing(data, capfd):
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"not a valid pickle \(.+\)") as caught:
        safe_pickle.load(io.BytesIO(data), what="crafted.pkl")
    del caught  # whatever the error still holds is freed now, not after the check
    gc.collect()
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
