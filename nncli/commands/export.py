"""`nncli export`: a checkpoint's model as a portable file.

    .npz    plain arrays (the format is `nncli.training.export`'s), which `predict`, `eval` and
            `nncli.load` accept as a checkpoint
    .onnx   an ONNX graph of the preprocessing, the layers and the output link, for
            onnxruntime and the like (`nncli.training.onnx_export`; needs the onnx extra)

The format is the output's suffix, or `fmt` (`--format`).
"""

from __future__ import annotations

from pathlib import Path

from nncli.builder.trained import TrainedModel
from nncli.errors import NncliError
from nncli.training import checkpoint, export

FORMATS = {".npz": "npz", ".onnx": "onnx"}


def check_output(output: str | Path) -> Path:
    """`output` as a Path, if it names an .npz file."""
    output = Path(output)
    if output.suffix.lower() != ".npz":
        raise NncliError(f"{output}: an export is an .npz file; name it {output.with_suffix('.npz').name}")
    return output


def output_format(output: str | Path, fmt: str | None = None, option: str = "--format {}") -> str:
    """The format to write `output` in: `fmt`, else by its suffix; an `NncliError` where
    neither says, or where they disagree. `option` spells `fmt` given a value as the caller
    takes it (the Python API's `format="{}"`)."""
    output = Path(output)
    by_suffix = FORMATS.get(output.suffix.lower())
    if fmt is None:
        if by_suffix is None:
            raise NncliError(f"{output}: cannot tell the format from its suffix; name it"
                             f" {output.with_suffix('.npz').name} or {output.with_suffix('.onnx').name},"
                             f" or give {option.format('npz')} or {option.format('onnx')}")
        return by_suffix
    fmt = fmt.lower()
    if fmt not in FORMATS.values():
        raise NncliError(f"{option.format(fmt)}: the formats are {', '.join(FORMATS.values())}")
    if by_suffix is not None and by_suffix != fmt:
        raise NncliError(f"{output}: its suffix says {by_suffix} but {option.format(fmt)} was given; name it"
                         f" {output.with_suffix('.' + fmt).name}")
    if fmt == "npz":
        check_output(output)  # predict tells an export by its suffix
    return fmt


def export_checkpoint(path: str | Path, output: str | Path, fmt: str | None = None) -> dict:
    """Write the model of checkpoint (or run directory) `path` to `output`; returns what was
    written: the output path, the format, the epoch, and the arrays' count (npz) or the
    graph's nodes and constants (onnx)."""
    output = Path(output)
    fmt = output_format(output, fmt)
    if fmt == "onnx":
        from nncli.training import onnx_export

        onnx_export.load_onnx()  # before reading the checkpoint: the missing extra is the news
        saved = checkpoint.load(path)
        trained = TrainedModel(saved)
        written = onnx_export.export_onnx(trained, output)
        return {"output": str(output), "format": fmt, "checkpoint": saved["path"],
                "epoch": int(saved["epoch"]), **written}
    saved = checkpoint.load(path)
    TrainedModel(saved)  # refuses a checkpoint that could not be used once exported
    header = export.export(saved, output)
    return {
        "output": str(output),
        "format": fmt,
        "checkpoint": saved["path"],
        "epoch": header["epoch"],
        "arrays": len(header["params"]) + len(header["buffers"]),
    }
