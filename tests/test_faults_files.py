"""Fault injection for files: damaged checkpoints and exports, and hostile files that ask for
far more memory than their size, each refused in one line before anything is built.

Where memory is the point, the command runs in a subprocess and its peak resident size is
read back (`ru_maxrss` of a probe process whose only child is `python -m nncli`)."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import nncli as api
from nncli.cli import cli
from nncli.training import checkpoint, export

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT_MIB = 600

# The probe: runs `python -m nncli ARGS` and prints its exit code, stderr and peak memory.
PROBE = """\
import json, resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "nncli", *sys.argv[1:]], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(json.dumps({"code": done.returncode, "stderr": done.stderr, "peak_mib": peak / 1024}))
"""


def run_measured(*args, cwd: Path) -> dict:
    """`python -m nncli ARGS` in a subprocess: {"code", "stderr", "peak_mib"}."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True,
                           text=True, cwd=cwd, env=env, check=True)
    return json.loads(probe.stdout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, spiral):
    """The spiral config trained for 2 epochs, exported, with 5 of its inputs as a CSV:
    (the run directory, the export, the CSV)."""
    folder = tmp_path_factory.mktemp("faults")
    (folder / "spiral.yaml").write_text(spiral({"train.epochs": 2}))
    runner = CliRunner()
    previous = Path.cwd()
    os.chdir(folder)
    try:
        result = runner.invoke(cli, ["train", "spiral.yaml", "--run-dir", "run", "--quiet"])
        assert result.exit_code == 0, result.output
        result = runner.invoke(cli, ["export", "run", "-o", "model.npz"])
        assert result.exit_code == 0, result.output
    finally:
        os.chdir(previous)
    inputs = folder / "x.csv"
    inputs.write_text("x0,x1\n" + "".join(f"{i / 10},{-i / 7}\n" for i in range(5)))
    return folder / "run", folder / "model.npz", inputs


def one_line_error(result) -> str:
    """The single stderr line of a refused command, checked to be one line with no traceback."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_checkpoint_is_written_with_a_digest_header(trained):
    run, _, _ = trained
    data = (run / "checkpoints" / "last.pkl").read_bytes()
    assert data.startswith(checkpoint.MAGIC)
    assert int.from_bytes(data[checkpoint.HEADER_SIZE - 8:checkpoint.HEADER_SIZE], "little") == (
        len(data) - checkpoint.HEADER_SIZE)


@pytest.mark.parametrize("flip", [0xFF, 0x01])
def test_one_byte_flips_anywhere_in_a_checkpoint_are_refused_as_damaged(trained, nncli, tmp_path, flip):
    run, _, _ = trained
    data = (run / "checkpoints" / "best.pkl").read_bytes()
    positions = np.linspace(0, len(data) - 1, 20).astype(int)
    refused = 0
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= flip
        path = tmp_path / f"flip{position}.pkl"
        path.write_bytes(bytes(damaged))
        line = one_line_error(nncli("eval", path))
        assert line.startswith("error: damaged: checkpoint") and str(path) in line, (position, line)
        refused += 1
    assert refused == 20


def test_a_truncated_checkpoint_is_refused_as_damaged(trained, nncli, tmp_path):
    run, _, _ = trained
    data = (run / "checkpoints" / "best.pkl").read_bytes()
    for keep in (0, 5, 20, checkpoint.HEADER_SIZE + 10, len(data) - 1):
        path = tmp_path / f"cut{keep}.pkl"
        path.write_bytes(data[:keep])
        assert "damaged" in one_line_error(nncli("eval", path))


def test_resuming_a_damaged_last_checkpoint_points_to_best_or_a_fresh_run(trained, nncli, tmp_path):
    run, _, _ = trained
    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml",):
        (copy / name).write_bytes((run / name).read_bytes())
    best = (run / "checkpoints" / "best.pkl").read_bytes()
    (copy / "checkpoints" / "best.pkl").write_bytes(best)
    last = bytearray((run / "checkpoints" / "last.pkl").read_bytes())
    last[len(last) // 2] ^= 0x10
    (copy / "checkpoints" / "last.pkl").write_bytes(bytes(last))

    line = one_line_error(nncli("train", "--resume", copy, "--set", "train.epochs=3"))
    assert "damaged" in line and "best.pkl" in line and "afresh" in line
    # with best.pkl damaged too, only a fresh run is left to suggest
    best = bytearray(best)
    best[-5] ^= 0x10
    (copy / "checkpoints" / "best.pkl").write_bytes(bytes(best))
    line = one_line_error(nncli("train", "--resume", copy, "--set", "train.epochs=3"))
    assert "damaged" in line and "best.pkl" not in line and "afresh" in line


def test_a_checkpoint_from_before_digests_still_loads_as_it_did(trained, nncli, tmp_path):
    run, _, _ = trained
    new = run / "checkpoints" / "best.pkl"
    state = checkpoint.load(new)
    del state["path"]
    old = tmp_path / "old.pkl"  # what the previous nncli wrote: the bare pickle
    old.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    assert not old.read_bytes().startswith(checkpoint.MAGIC) and new.read_bytes().startswith(checkpoint.MAGIC)
    from_old, from_new = nncli("eval", old, "--json"), nncli("eval", new, "--json")
    assert from_old.exit_code == 0 and from_new.exit_code == 0, from_old.output
    old_report, new_report = json.loads(from_old.stdout), json.loads(from_new.stdout)
    assert old_report.pop("checkpoint") == str(old) and new_report.pop("checkpoint") == str(new)
    assert old_report == new_report


# A pickle of 32 bytes: bytearray(2**31), two GiB of zeros.
BYTEARRAY_BOMB = b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x00\x00\x80\x00\x85R."
# list(range(3 * 10**7)): a million-fold growth, about 1 GiB of Python ints.
LIST_BOMB = b"\x80\x02cbuiltins\nlist\ncbuiltins\nrange\nJ\x80\xc3\xc9\x01\x85R\x85R."


# numpy's scalar() of a 2 GB void dtype: made, zeroed, at its full size (found in review).
SCALAR_BOMB = (b"\x80\x02cnumpy.core.multiarray\nscalar\nq\x00cnumpy\ndtype\nq\x01X\x0b\x00\x00\x00"
               b"V2000000000\x85Rq\x02h\x00h\x02\x85R.")


@pytest.mark.parametrize("payload", [BYTEARRAY_BOMB, LIST_BOMB, SCALAR_BOMB],
                         ids=["bytearray", "list", "scalar"])
def test_a_tiny_pickle_asking_for_gigabytes_is_refused_cheaply(tmp_path, payload):
    assert len(payload) <= 80
    bomb = tmp_path / "bomb.pkl"
    bomb.write_bytes(payload)
    done = run_measured("eval", bomb, cwd=tmp_path)
    assert done["code"] == 1 and "Traceback" not in done["stderr"]
    assert "refusing to load checkpoint" in done["stderr"] and "more than a file of" in done["stderr"]
    assert len(done["stderr"].strip().splitlines()) == 1
    assert done["peak_mib"] < MEMORY_LIMIT_MIB, done


def _inflating_npz(path: Path, rows: int) -> Path:
    """An .npz whose array x of (rows, 2) float32 zeros is deflated to about a thousandth."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (rows, 2)})
    chunk = bytes(1 << 20)
    total = rows * 8
    with (zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
          archive.open("x.npy", "w", force_zip64=True) as member):
        member.write(header.getvalue())
        for start in range(0, total, len(chunk)):
            member.write(chunk[: min(len(chunk), total - start)])
    return path


def test_an_inflating_npz_given_to_predict_is_refused_cheaply(trained, tmp_path):
    run, _, _ = trained
    bomb = _inflating_npz(tmp_path / "bomb.npz", rows=100 << 20)  # 800 MiB inflated
    assert bomb.stat().st_size < 1 << 20
    done = run_measured("predict", run, bomb, cwd=tmp_path)
    assert done["code"] == 1 and "Traceback" not in done["stderr"], done
    assert f"refusing to read {bomb}: its arrays would unpack to" in done["stderr"]
    assert len(done["stderr"].strip().splitlines()) == 1
    assert done["peak_mib"] < MEMORY_LIMIT_MIB, done


def test_the_npz_dataset_has_the_same_guard(tmp_path, spiral):
    from nncli.data.arrays import read_npz
    from nncli.errors import DataError

    bomb = _inflating_npz(tmp_path / "bomb.npz", rows=20 << 20)  # 160 MiB from about 160 KB
    with pytest.raises(DataError, match="its arrays would unpack to"):
        read_npz(bomb)


def _crafted_export(source: Path, path: Path, change) -> Path:
    """A copy of export `source` with `change(header)` applied to its JSON, deflated, and with
    a digest that matches: what a forger would write."""
    with np.load(source) as npz:
        arrays = {key: npz[key] for key in npz.files}
    header = json.loads(arrays["nncli.json"].tobytes())
    change(header)
    header["digest"] = {export.DIGEST: export.digest(header, arrays)}
    arrays["nncli.json"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez_compressed(path, **arrays)
    return path


def test_huge_class_names_in_an_export_are_cut_and_escaped(trained, nncli, tmp_path):
    _, model, inputs = trained

    def names(header):
        header["data"]["class_names"] = ["\x1b[2J" + "a" * 2_000_000, "b\nc" + "b" * 2_000_000, "c"]

    crafted = _crafted_export(model, tmp_path / "names.npz", names)
    assert crafted.stat().st_size < 1 << 20
    result = nncli("predict", crafted, inputs, "--top-k", "3")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and len(result.stdout) < 10_000
    lines = result.stdout.splitlines()
    assert len(lines) == 6  # the header and 5 rows: no name broke a row
    assert "\\x1b[2J" + "a" * 196 + "…" in result.stdout and "b\\nc" + "b" * 197 + "…" in result.stdout
    assert "warning:" in result.stderr and "cut to 200 characters" in result.stderr


def test_names_that_are_the_same_once_cut_are_refused(trained, nncli, tmp_path):
    _, model, inputs = trained

    def names(header):
        header["data"]["class_names"] = ["a" * 300 + "1", "a" * 300 + "2", "c"]

    crafted = _crafted_export(model, tmp_path / "same.npz", names)
    assert "the same once cut" in one_line_error(nncli("predict", crafted, inputs))


def test_deep_nesting_in_an_export_is_refused_in_one_line(trained, nncli, tmp_path):
    _, model, inputs = trained
    deep: list = []
    for _ in range(600):
        deep = [deep]

    crafted = _crafted_export(model, tmp_path / "deep.npz", lambda header: header["config"].update(x=deep))
    with pytest.raises(api.CheckpointError, match="nests more than 100 deep"):
        api.load(crafted)
    assert "nests more than 100 deep" in one_line_error(nncli("predict", crafted, inputs))


def test_an_export_changed_after_writing_is_refused_as_damaged(trained, nncli, tmp_path):
    _, model, inputs = trained
    with np.load(model) as npz:
        arrays = {key: npz[key] for key in npz.files}
    weights = next(name for name in arrays if name.endswith(".W"))
    arrays[weights] = arrays[weights] * 1.01  # well-formed, CRCs right, numbers wrong
    changed = tmp_path / "changed.npz"
    np.savez(changed, **arrays)
    line = one_line_error(nncli("predict", changed, inputs))
    assert line.startswith(f"error: damaged: export {changed}")
