"""TensorBoard event files in the run directory (`train: {loggers: [csv, tensorboard]}`),
made of tensorboardX's protocol buffers and summaries (an optional extra, imported only by a
run that asks for it) and written by nncli itself (`EventFile`).

What is logged, and at which step (TensorBoard's x-axis):

    epoch/<column>         each metrics.csv column (train_loss, train_acc, val_loss, val_acc, lr,
                           epoch_time_s) at the epoch's number, 1 for the first
    step/train_loss, step/lr   every training step, at the step's number (1 for the first batch)
    config                 the resolved config (config.yaml) as text, at each session's start,
                           at the number of epochs done
    final/<column>, best/<monitor>, test/loss, test/accuracy
                           when the run finishes, at the number of epochs done; and with them the
                           hparams plugin's record: the config flattened (optimizer.lr,
                           model[0].linear.units, ...) against those metrics
    weights/<parameter>    with `train: {tensorboard: {histograms: true}}`: each parameter's
                           histogram, at 0 (the initial weights) and after every epoch

Every session (a run, then each `--resume` of it) writes a file of its own. A resumed run
first rewrites the earlier files without what was logged after the checkpoint it resumes
from (a run killed mid-epoch logged steps that the resumed run logs again, and a killed run may
leave a record cut short), so that no step appears twice and none goes backwards, for
TensorBoard and for any other reader of the files.
"""

from __future__ import annotations

import contextlib
import struct
import time
from pathlib import Path

from nncli.errors import ConfigError, NncliError, WriteError
from nncli.fileio import atomic_write_bytes
from nncli.training.callbacks.base import Callback
from nncli.training.trainer import COLUMNS

EVENTS = "events.out.tfevents."
FLUSH_S = 10  # the longest the steps of a long epoch wait before they are written
HISTOGRAM_BINS = 64
INSTALL = "pip install 'nncli[tensorboard]' (or pip install tensorboardX)"


def tensorboardx():
    """The tensorboardX module; a `ConfigError` keyed `loggers` saying what to install without it."""
    try:
        import tensorboardX
        from tensorboardX.proto.event_pb2 import Event  # noqa: F401  (the protobuf runtime works)
    except ImportError:
        raise ConfigError(f"the tensorboard logger needs the tensorboardX package: {INSTALL}",
                          "loggers") from None
    except Exception as err:  # an installed but broken one (a protobuf of another major version)
        raise ConfigError(f"the tensorboard logger cannot import tensorboardX ({err}); reinstall it:"
                          f" {INSTALL}", "loggers") from None
    return tensorboardX


def require(config) -> None:
    """Refuse, at the config's `train.loggers` line, a config asking for TensorBoard where
    tensorboardX is not installed: before a run directory is made (`nncli check` and `train`)."""
    if "tensorboard" in config.train.loggers:
        with config.located(("train",)):
            tensorboardx()


def event_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.name.startswith(EVENTS) and p.is_file())


def read_records(data: bytes) -> list[bytes]:
    """The records of a TFRecord file's bytes (length, its CRC, the record, its CRC); a last
    record cut short (a process killed while writing) is left out."""
    records, at = [], 0
    while at + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        end = at + 12 + length + 4
        if end > len(data):
            break
        records.append(data[at + 12 : at + 12 + length])
        at = end
    return records


def _record(data: bytes) -> bytes:
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


# tags written once a session starts or a run finishes, at the number of epochs done: a session
# resuming at that number writes them again
SESSION_TAGS = ("config", "final/", "best/", "test/")


def kept(event, epochs: int, steps: int) -> bool:
    """Whether an earlier session's event stays when a run resumes after `epochs` epochs and
    `steps` steps: what the resumed session logs again goes."""
    tags = [value.tag for value in event.summary.value]
    if not tags:
        return True  # the file's version record
    tag = tags[0]
    if tag.startswith("_hparams_/"):  # the finished run's record: written again when it finishes
        return False
    if tag.startswith("step/"):
        return event.step <= steps
    if tag.startswith(SESSION_TAGS):
        return event.step < epochs
    return event.step <= epochs


def trim(folder: Path, epochs: int, steps: int) -> None:
    """Rewrite the event files in `folder` (atomically) without what `kept` leaves out."""
    from tensorboardX.proto.event_pb2 import Event

    for path in event_files(folder):
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise NncliError(f"cannot read {path} to resume its TensorBoard log ({err.strerror});"
                             " make it readable, or move it out of the run directory") from None
        records = read_records(raw)
        keep = []
        for record in records:
            try:
                event = Event.FromString(record)
            except Exception:  # a damaged record: nothing after it can be trusted either
                break
            if kept(event, epochs, steps):
                keep.append(record)
        if len(keep) < len(records) or sum(16 + len(r) for r in records) != len(raw):
            atomic_write_bytes(path, [_record(r) for r in keep])


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """The config as TensorBoard's hparams take it: one entry per value, by its YAML path
    (`optimizer.lr`, `model[0].linear.units`); lists of plain values as text, nulls left out."""
    out = {}
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        name = f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list))
                                                                       for v in value)):
            out.update(flat_hparams(value, name))
        elif isinstance(value, list):
            out[name] = ", ".join(str(v) for v in value)
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def final_metrics(summary: dict) -> dict[str, float]:
    """The metrics of a finished run that TensorBoard's hparams view compares runs by."""
    out = {}
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        if (summary.get("final") or {}).get(key) is not None:
            out[f"final/{key}"] = summary["final"][key]
    if summary.get("best_value") is not None:
        out[f"best/{summary['monitor']}"] = summary["best_value"]
    for key in ("loss", "accuracy"):
        if (summary.get("test") or {}).get(key) is not None:
            out[f"test/{key}"] = summary["test"][key]
    return {key: float(value) for key, value in out.items()}


class EventFile:
    """A session's event file. Events are kept in memory and appended to the file at each
    `flush`, in this thread: tensorboardX's SummaryWriter hands each event to a thread through
    a queue, which cost 81 us of CPU (240 wall) per training step's two scalars on an AMD EPYC
    under load, against 14 (43) for this (bench/bench_tensorboard.py)."""

    def __init__(self, folder: Path, earlier: int):
        from tensorboardX.proto.event_pb2 import Event

        self.Event = Event
        stamp, n = int(time.time()), earlier + 1
        while True:  # a name of its own, even for sessions started within one second
            self.path = folder / f"{EVENTS}{stamp:010d}.nncli.{n}"
            try:
                with open(self.path, "xb"):
                    break
            except FileExistsError:
                n += 1
            except OSError as err:
                raise WriteError(f"cannot write {self.path}: {err.strerror}", str(self.path)) from None
        self.pending = [Event(wall_time=time.time(), file_version="brain.Event:2")]
        self.steps: list[tuple[float, int, float, float]] = []  # wall time, step, loss, lr
        self.flushed = time.monotonic()

    def add(self, step: int, summary) -> None:
        self.pending.append(self.Event(wall_time=time.time(), step=step, summary=summary))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        self.add(step, Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()]))

    def flush(self) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        events = [
            self.Event(wall_time=wall, step=step, summary=Summary(value=[
                Summary.Value(tag="step/train_loss", simple_value=loss),
                Summary.Value(tag="step/lr", simple_value=lr)]))
            for wall, step, loss, lr in self.steps
        ]
        data = b"".join(_record(event.SerializeToString()) for event in [*events, *self.pending])
        try:
            with open(self.path, "ab") as f:
                f.write(data)
        except OSError as err:
            raise WriteError(f"cannot write {self.path}: {err.strerror}", str(self.path)) from None
        self.pending, self.steps, self.flushed = [], [], time.monotonic()


class TensorBoardLogger(Callback):
    """Event files in `folder` (the run directory); see the module's docstring."""

    def __init__(self, folder: Path, config: dict, config_text: str, histograms: bool = False):
        self.folder, self.config, self.config_text = Path(folder), config, config_text
        self.histograms = histograms
        self.file: EventFile | None = None

    def on_train_begin(self, trainer):
        tensorboardx()
        state = trainer.state
        earlier = event_files(self.folder)
        if earlier:
            trim(self.folder, state.epoch, state.step)
        self.file = EventFile(self.folder, len(earlier))
        from tensorboardX.summary import text

        code = "    " + self.config_text.rstrip("\n").replace("\n", "\n    ")  # markdown: as code
        self.file.add(state.epoch, text("config", code))
        if not earlier and self.histograms and state.step == 0:
            self._histograms(trainer, 0)
        self.file.flush()

    def on_batch_end(self, trainer, batch, loss):
        self.file.steps.append((time.time(), trainer.state.step, loss, trainer.exp.optimizer.lr))
        if time.monotonic() - self.file.flushed > FLUSH_S:
            self.file.flush()

    def on_epoch_end(self, trainer, row):
        epoch = row["epoch"]
        self.file.scalars(epoch, {f"epoch/{c}": row[c] for c in COLUMNS[1:] if row.get(c) is not None})
        if self.histograms:
            self._histograms(trainer, epoch)
        self.file.flush()

    def _histograms(self, trainer, step: int) -> None:
        from tensorboardX.summary import histogram

        for name, value in trainer.exp.model.params.items():
            self.file.add(step, histogram(f"weights/{name}", value, bins=HISTOGRAM_BINS))

    def on_summary(self, trainer, summary):
        from tensorboardX.summary import hparams

        step = trainer.state.epoch
        metrics = final_metrics(summary)
        self.file.scalars(step, metrics)
        # the session's hparams, not the experiment's list of them: TensorBoard takes one run's
        # list for all the runs in its folder, but builds it from every run's when none has one
        _, start, end = hparams(flat_hparams(self.config), metrics)
        self.file.add(step, start)
        self.file.add(step, end)
        file, self.file = self.file, None
        file.flush()

    def on_interrupt(self, trainer, signum):
        self.close()

    def on_nonfinite(self, trainer, report):
        self.close()

    def close(self):
        """Write what is pending, where possible: a run stopping on a full disk says so itself."""
        if self.file is not None:
            file, self.file = self.file, None
            with contextlib.suppress(WriteError):
                file.flush()
