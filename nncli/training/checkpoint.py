"""Checkpoints: pickle files of plain data, written atomically and read without running code.

A checkpoint is a dict of builtins and numpy arrays only, with these keys (`save` adds the
first two; `tests/test_checkpoint.py` checks that this list is what a run writes):

    format_version  the checkpoint format, FORMAT_VERSION
    nncli_version   the nncli that wrote it
    config          the resolved YAML data
    model           the model's params and buffers (`Model.state_dict`)
    optimizer       the optimizer's step count and per-parameter state
    schedule        the learning-rate schedule's state
    preprocessor    the fitted preprocessing steps and their statistics
    data            the dataset, a fingerprint of it, its task, the input shapes, the outputs,
                    the class names (`nncli.builder.checkpoints.data_record`)
    rng             the run's generator state
    threads         how a batch is split into shards, or run whole with the BLAS's own threads
                    as the run's start chose (`nncli.nn.parallel.setting_record`), so a resumed
                    run computes the same numbers on a machine with other cores
    epoch           epochs completed
    training        the run's course (`TrainingState.to_dict`): its history of metrics rows,
                    the best and early-stopping state, and where an interrupted epoch stopped

`load` adds `path`, the file read.

On disk, a checkpoint is a header and then the pickle:

    MAGIC (12 bytes)  the BLAKE2b-256 digest of the pickle (32 bytes)  its length (8 bytes, little-endian)

`load` checks the length and the digest before it unpickles anything, so a file changed on
disk by as little as one bit is refused as damaged. A file without the header is a checkpoint
of an nncli from before digests (a bare pickle, which starts with b"\x80"): it is read as it
always was, without a word (its first save after a resume writes the header). A header that
differs from MAGIC in a byte or two is a damaged new file, not an old one.

`save` writes a temporary file beside the target, flushes and fsyncs it, then renames it over
the target, so a reader sees the old checkpoint or the new one, never half of one. `load` uses
the restricted unpickler in `nncli.safe_pickle`: a crafted pickle naming anything but arrays
and builtins, or building more than its size can hold, is refused before any of it runs.
`load` reads `nncli export`'s .npz files too (`nncli.training.export`), as checkpoints without
their training state.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

from nncli import __version__, safe_pickle
from nncli.errors import CheckpointError
from nncli.fileio import MAX_DEPTH, atomic_write_bytes, too_deep
from nncli.training import export

FORMAT_VERSION = 1
REQUIRED = ("format_version", "config", "model", "epoch")
MAGIC = b"\x93NNCLI-CKPT\n"
DIGEST_SIZE = 32
HEADER_SIZE = len(MAGIC) + DIGEST_SIZE + 8


def _digest() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=DIGEST_SIZE)


def save(path: Path, state: dict[str, Any]) -> None:
    payload = pickle.dumps(
        {"format_version": FORMAT_VERSION, "nncli_version": __version__, **state},
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    digest = _digest()
    digest.update(payload)
    header = MAGIC + digest.digest() + len(payload).to_bytes(8, "little")
    atomic_write_bytes(path, (header, payload))


def verify(f, path: Path) -> str | None:
    """Check the open checkpoint `f` against its header and leave it at the start of the
    pickle; returns why it is damaged, or None (None too for a file with no header: an old one)."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(HEADER_SIZE)
    if size == 0:
        return "it is empty"
    if len(head) < len(MAGIC) and MAGIC.startswith(head):
        return "it is cut short inside its header"
    if not head.startswith(MAGIC):
        near = sum(a != b for a, b in zip(head, MAGIC, strict=False)) <= 2 and len(head) >= len(MAGIC)
        f.seek(0)
        return "its header is damaged" if near else None
    if len(head) < HEADER_SIZE:
        return "it is cut short inside its header"
    expected, length = head[len(MAGIC):-8], int.from_bytes(head[-8:], "little")
    if size - HEADER_SIZE != length:
        return f"it holds {size - HEADER_SIZE:,} bytes of data where {length:,} were written"
    digest = _digest()
    while chunk := f.read(1 << 20):
        digest.update(chunk)
    if digest.digest() != expected:
        return "its contents do not match the digest written with them"
    f.seek(HEADER_SIZE)
    return None


def _damaged(path: Path, why: str) -> CheckpointError:
    message = f"damaged: checkpoint {path} changed on disk after nncli wrote it ({why}); it is not loaded"
    best = path.with_name("best.pkl")
    if path.name == "last.pkl" and best.is_file():
        try:
            with open(best, "rb") as f:
                intact = verify(f, best) is None
        except OSError:
            intact = False
        if intact:
            message += (f"; to resume from the best epoch instead, copy {best} over it (then"
                        " nncli train --resume), or train afresh")
        else:
            message += "; train afresh"
    elif path.name == "last.pkl":
        message += "; train afresh"
    return CheckpointError(message)


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (whose best, else last, checkpoint is taken), or
    the run's checkpoints/ folder itself."""
    path = Path(path)
    if path.is_dir():
        for folder in (path / "checkpoints", path):
            for name in ("best.pkl", "last.pkl"):
                if (folder / name).is_file():
                    return folder / name
        raise CheckpointError(f"{path} is a directory with no checkpoints/best.pkl or checkpoints/last.pkl")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def load(path: str | Path) -> dict[str, Any]:
    path = resolve(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        run = path.parent
        if (run / "checkpoints").is_dir():  # a run's own config.yaml
            raise CheckpointError(f"{path} is the config of the run {run}: give the run directory {run}")
        raise CheckpointError(
            f"{path} is a config, not a checkpoint: train it (nncli train {path}) and give the run"
            " directory, or a .pkl file from its checkpoints/"
        )
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path} is an ONNX export, for onnxruntime and other tools; nncli reads"
                              " a run directory, a checkpoint (.pkl) or an .npz export")
    if export.is_export(path):  # `nncli export`'s .npz, which needs no unpickling
        return export.read(path)
    try:
        with open(path, "rb") as f:
            damage = verify(f, path)
            if damage:
                raise _damaged(path, damage)
            state = safe_pickle.load(f, what=f"checkpoint {path}", error=CheckpointError)
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror}") from None
    if too_deep(state):
        raise CheckpointError(f"checkpoint {path} nests containers more than {MAX_DEPTH} deep;"
                              " it is damaged or crafted")
    if not isinstance(state, dict) or not all(key in state for key in REQUIRED):
        raise CheckpointError(f"{path} is not an nncli checkpoint (it lacks the expected fields)")
    export.check_format_version(state["format_version"], FORMAT_VERSION,
                                f"{path} is not an nncli checkpoint", f"{path} has checkpoint format")
    state["path"] = str(path)
    return state
