"""Checkpoints: pickle files of plain data, written atomically and read without running code.

A checkpoint is a dict of builtins and numpy arrays only:

    format_version, nncli_version, config (the resolved YAML data), model (params, buffers),
    optimizer, schedule, preprocessor (fitted statistics), data (the dataset, a fingerprint of
    it, its task, the model's input shape, the outputs and the class names), rng (the generator's state),
    epoch (epochs completed), progress (where an interrupted epoch stopped, or None),
    history (metrics rows so far), tracker (best and early-stopping state)

`save` writes a temporary file beside the target, flushes and fsyncs it, then renames it over
the target, so a reader sees the old checkpoint or the new one, never half of one. `load` uses
the restricted unpickler in `nncli.safe_pickle`: a crafted pickle naming anything but arrays
and builtins is refused before any of it runs. `load` reads `nncli export`'s .npz files too
(`nncli.training.export`), as checkpoints without their training state.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from nncli import __version__, safe_pickle
from nncli.errors import CheckpointError
from nncli.fileio import atomic_write_bytes
from nncli.training import export

FORMAT_VERSION = 1
REQUIRED = ("format_version", "config", "model", "epoch")


def save(path: Path, state: dict[str, Any]) -> None:
    payload = {"format_version": FORMAT_VERSION, "nncli_version": __version__, **state}
    atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (whose best, else last, checkpoint is taken)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pkl", "last.pkl"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path} is a directory with no checkpoints/best.pkl or checkpoints/last.pkl")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def load(path: str | Path) -> dict[str, Any]:
    path = resolve(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        raise CheckpointError(
            f"{path} is a config, not a checkpoint: train it (nncli train {path}) and give the run"
            " directory, or a .pkl file from its checkpoints/"
        )
    if export.is_export(path):  # `nncli export`'s .npz, which needs no unpickling
        return export.read(path)
    try:
        with open(path, "rb") as f:
            state = safe_pickle.load(f, what=f"checkpoint {path}", error=CheckpointError)
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror}") from None
    if not isinstance(state, dict) or not all(key in state for key in REQUIRED):
        raise CheckpointError(f"{path} is not an nncli checkpoint (it lacks the expected fields)")
    version = state["format_version"]
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} is not an nncli checkpoint (bad format version {version!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, newer than this nncli {__version__} reads"
            f" (format {FORMAT_VERSION}); upgrade nncli to load it"
        )
    state["path"] = str(path)
    return state
