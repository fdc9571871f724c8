"""`nncli export`: a checkpoint's model as a portable .npz of plain arrays (the format is
`nncli.training.export`'s), which `predict`, `eval` and `nncli.load` accept as a checkpoint."""

from __future__ import annotations

from pathlib import Path

from nncli.builder.trained import TrainedModel
from nncli.errors import NncliError
from nncli.training import checkpoint, export


def check_output(output: str | Path) -> Path:
    """`output` as a Path, if it names an .npz file."""
    output = Path(output)
    if output.suffix.lower() != ".npz":
        raise NncliError(f"{output}: an export is an .npz file; name it {output.with_suffix('.npz').name}")
    return output


def export_checkpoint(path: str | Path, output: str | Path) -> dict:
    """Write the model of checkpoint (or run directory) `path` to `output`; returns what was
    written: the output path, the arrays' count and the epoch."""
    output = check_output(output)
    saved = checkpoint.load(path)
    TrainedModel(saved)  # refuses a checkpoint that could not be used once exported
    header = export.export(saved, output)
    return {
        "output": str(output),
        "checkpoint": saved["path"],
        "epoch": header["epoch"],
        "arrays": len(header["params"]) + len(header["buffers"]),
    }
