"""Portable weights: a trained model as an .npz of plain arrays, readable without pickle.

`nncli export` writes, from a checkpoint:

    layers.0.W, layers.0.b, ...    the parameters, by their names in the model
    layers.2.running_mean, ...     the buffers (batch norm's running statistics)
    preprocess.0.mean, ...         the arrays of the fitted preprocessing, by step and name
    nncli.json                     UTF-8 JSON as a uint8 array: the format, the resolved config,
                                   the data record (shapes, task, class names, table columns),
                                   the preprocessing steps (arrays named by reference), which
                                   arrays are parameters and which buffers, and the epoch

nncli.json also holds `digest`: the BLAKE2b-256 of the JSON without it (as `_canonical` writes
it) and of every array (name, dtype, shape, bytes, by name), checked by `read` before it uses
anything; the zip's CRCs are kept too. An export without `digest` (from an nncli before it)
is read as it was. The reading is bounded (`nncli.fileio.npz_arrays`: no zip bomb) and JSON
nested past `nncli.fileio.MAX_DEPTH` is refused.

`read` turns such a file back into the dict `nncli.training.checkpoint.load` returns for a
pickle, without the training state (optimizer, generator, history): an export can be evaluated,
predicted with and loaded from Python, but not resumed. numpy reads it with allow_pickle=False,
so a crafted file can hold numbers and nothing that runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from nncli import __version__
from nncli.errors import CheckpointError
from nncli.fileio import MAX_DEPTH, TooLarge, atomic_write_bytes, npz_arrays, too_deep

FORMAT = "nncli model"
FORMAT_VERSION = 1
META = "nncli.json"
DIGEST = "blake2b-256"


def digest(header: dict, arrays: dict[str, np.ndarray]) -> str:
    """The hex BLAKE2b-256 of `header` (less its "digest") and `arrays` (less nncli.json)."""
    hashed = hashlib.blake2b(digest_size=32)
    rest = {key: value for key, value in header.items() if key != "digest"}
    hashed.update(json.dumps(rest, sort_keys=True, allow_nan=True).encode("utf-8"))
    for name in sorted(arrays):
        if name == META:
            continue
        value = np.ascontiguousarray(arrays[name])
        hashed.update(json.dumps([name, value.dtype.str, list(value.shape)]).encode("utf-8"))
        hashed.update(value.data if value.size else b"")
    return hashed.hexdigest()


def export(saved: dict, path: Path) -> dict:
    """Write checkpoint `saved` (from `checkpoint.load`) to `path` as an .npz; returns the
    JSON header written."""
    model = saved["model"]
    arrays: dict[str, np.ndarray] = {}
    for store in ("params", "buffers"):
        for name, value in model[store].items():
            arrays[name] = np.asarray(value)
    steps = []
    for i, step in enumerate(saved["preprocessor"]["steps"]):
        state = {}
        for key, value in step["state"].items():
            if isinstance(value, np.ndarray):
                arrays[f"preprocess.{i}.{key}"] = value
                state[key] = {"array": f"preprocess.{i}.{key}"}
            else:
                state[key] = _plain(value)
        steps.append({"name": step["name"], "config": _plain(step["config"]), "state": state})
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nncli_version": __version__,
        "exported_from": str(saved.get("path", "")),
        "epoch": int(saved["epoch"]),
        "inside_epoch": _inside_epoch(saved),
        "config": _plain(saved["config"]),
        "data": _plain(saved.get("data")),
        "preprocessor": {"dtype": saved["preprocessor"]["dtype"], "steps": steps},
        "params": list(model["params"]),
        "buffers": list(model["buffers"]),
    }
    header["digest"] = {DIGEST: digest(header, arrays)}
    text = json.dumps(header, indent=1, allow_nan=True).encode("utf-8")
    arrays[META] = np.frombuffer(text, dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return header


def _inside_epoch(saved: dict) -> dict | None:
    """Where inside an epoch the checkpoint was written ({epoch, batch}), None between epochs."""
    training = saved.get("training")
    progress = training.get("progress") if isinstance(training, dict) else None
    if not isinstance(progress, dict):
        return None
    return {"epoch": int(progress["epoch"]), "batch": int(progress["batch"])}


def _plain(value):
    """`value` with numpy scalars and 0-d arrays as Python numbers and tuples as lists, for JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def is_export(path: Path) -> bool:
    """Whether `path` is, or starts as, a zip archive (an .npz), which a pickle never does: a
    truncated export is still told from a pickle, and refused as a damaged export."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04" or zipfile.is_zipfile(path)
    except OSError:
        return False


def read(path: Path) -> dict:
    """The checkpoint dict of export `path`; `CheckpointError` for anything that is not one."""
    what = f"{path} is not an nncli model export"
    try:
        arrays = npz_arrays(path)
    except TooLarge as err:
        raise CheckpointError(f"refusing to read {path}: {err}") from None
    except ValueError as err:  # object arrays (they need pickle), a damaged array header
        raise CheckpointError(f"{what} ({err})") from None
    except MemoryError:  # an array header declaring more than the file holds
        raise CheckpointError(f"{what}: an array in it declares more data than memory can hold") from None
    except (OSError, EOFError, KeyError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as err:  # noqa: E501
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression
        raise CheckpointError(f"{what}, or it is damaged ({err})") from None
    if META not in arrays:
        held = ", ".join(sorted(arrays)[:5]) or "nothing"
        raise CheckpointError(f"{what} (it has no {META}; it holds {held})")
    try:
        header = json.loads(np.asarray(arrays.pop(META)).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{what}: its {META} is not valid JSON ({err})") from None
    except RecursionError:
        header = None
    if header is None or too_deep(header):
        raise CheckpointError(f"refusing to read {path}: its {META} nests more than {MAX_DEPTH} deep")
    if isinstance(header, dict) and isinstance(header.get("digest"), dict):
        written = header["digest"].get(DIGEST)
        if written != digest(header, arrays):
            raise CheckpointError(
                f"damaged: export {path} changed after nncli wrote it (its arrays and {META} do"
                " not match the digest written with them); it is not loaded"
            )
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{what} (its {META} does not say format {FORMAT!r})")
    check_format_version(header.get("format_version"), FORMAT_VERSION, what,
                         f"{path} is an nncli model export of format")
    try:
        return _checkpoint(header, arrays, path)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise CheckpointError(f"{path}: its {META} lacks or mangles {err}") from None


def check_format_version(version, current: int, refused: str, newer: str) -> None:
    """Refuse a format `version` that is not a whole number from 1 (`{refused} (bad format
    version 0)`) or is above `current`, the one this nncli writes (`{newer} 2, newer than this
    nncli ... reads (format 1); upgrade nncli to load it`): checkpoints and exports alike."""
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{refused} (bad format version {version!r})")
    if version > current:
        raise CheckpointError(f"{newer} {version}, newer than this nncli {__version__} reads"
                              f" (format {current}); upgrade nncli to load it")


def _checkpoint(header: dict, arrays: dict[str, np.ndarray], path: Path) -> dict:
    def array(name) -> np.ndarray:
        if not isinstance(name, str) or name not in arrays:
            raise CheckpointError(f"{path}: {META} names an array {name!r} that the file lacks")
        value = arrays[name]
        if value.dtype.kind not in "iufb":
            raise CheckpointError(f"{path}: array {name} holds {value.dtype} values, not numbers")
        return value

    steps = []
    for step in header["preprocessor"]["steps"]:
        state = {
            key: array(value["array"]) if isinstance(value, dict) and "array" in value else value
            for key, value in step["state"].items()
        }
        steps.append({"name": step["name"], "config": step["config"], "state": state})
    if not isinstance(header["config"], dict):
        raise CheckpointError(f"{path}: its {META} holds no config mapping")
    inside = header.get("inside_epoch")
    if inside is not None and not (
        isinstance(inside, dict) and all(isinstance(inside.get(k), int) for k in ("epoch", "batch"))
    ):
        raise CheckpointError(f"{path}: its {META} has a damaged inside_epoch entry")
    return {
        "format_version": 1,
        "nncli_version": header.get("nncli_version"),
        "config": header["config"],
        "model": {
            "params": {name: array(name) for name in header["params"]},
            "buffers": {name: array(name) for name in header["buffers"]},
        },
        "preprocessor": {"dtype": header["preprocessor"]["dtype"], "steps": steps},
        "data": header.get("data"),
        "epoch": int(header["epoch"]),
        "training": {"progress": header.get("inside_epoch")},  # what `partly_trained` reads
        "exported": True,
        "path": str(path),
    }
