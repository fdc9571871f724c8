"""train.loggers: [csv, tensorboard]: event files in the run directory, read back here with a
reader of our own (TFRecord framing and tensorboardX's protobuf classes), against metrics.csv
and steps.csv, for a run and for a run interrupted, left with events past its checkpoint, and
resumed."""

from __future__ import annotations

import json
import signal
import struct
import sys

import pytest
import yaml

from nncli.training.rundir import read_metrics, read_steps

tbx = pytest.importorskip("tensorboardX")
from tensorboardX.proto.event_pb2 import Event  # noqa: E402
from tensorboardX.proto.summary_pb2 import Summary  # noqa: E402

COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s")


def events(run) -> list[Event]:
    """Every event of the run's files, in the order TensorBoard reads them (by file name)."""
    out = []
    for path in sorted(run.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            assert at + 16 + length <= len(data), f"{path.name} ends inside a record"
            out.append(Event.FromString(data[at + 12 : at + 12 + length]))
            at += 16 + length
    return out


def series(run) -> dict[str, list[tuple[int, object]]]:
    """tag -> [(step, value)] in file order: a scalar's float, a text's string, else the kind."""
    out: dict[str, list] = {}
    for event in events(run):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                item = value.simple_value
            elif value.tag.endswith("/text_summary"):
                item = value.tensor.string_val[0].decode()
            else:
                item = value.WhichOneof("value") or value.metadata.plugin_data.plugin_name
            out.setdefault(value.tag, []).append((event.step, item))
    return out


def assert_matches_metrics_csv(run, epochs: int, steps: int) -> dict:
    found = series(run)
    rows = read_metrics(run / "metrics.csv")
    assert [int(row["epoch"]) for row in rows] == list(range(1, epochs + 1))
    for column in COLUMNS:
        logged = found[f"epoch/{column}"]
        assert [step for step, _ in logged] == list(range(1, epochs + 1)), column
        # TensorBoard keeps float32: one rounding from metrics.csv's float64
        assert [v for _, v in logged] == pytest.approx([row[column] for row in rows], rel=1e-6, abs=1e-9)
    for tag in ("step/train_loss", "step/lr"):
        assert [step for step, _ in found[tag]] == list(range(1, steps + 1)), tag  # once each, in order
    # and the steps as steps.csv holds them: (step, fractional epoch, loss, lr)
    step_rows = read_steps(run / "steps.csv")
    assert [row[0] for row in step_rows] == list(range(1, steps + 1))
    assert [v for _, v in found["step/train_loss"]] == pytest.approx([row[2] for row in step_rows], rel=1e-6)
    assert [v for _, v in found["step/lr"]] == pytest.approx([row[3] for row in step_rows], rel=1e-6)
    return found


@pytest.fixture
def tb_yaml(workdir, spiral):
    # 144 training samples in batches of 16: 9 steps an epoch, each batch whole, so an epoch's
    # train_loss is the mean of its steps' losses
    path = workdir / "tb.yaml"
    path.write_text(spiral({"train.epochs": 3, "train.loggers": ["csv", "tensorboard"],
                            "train.tensorboard": {"histograms": True}}))
    return path


def test_a_run_logs_what_metrics_csv_holds(workdir, tb_yaml, nncli):
    result = nncli("train", tb_yaml, "--run-dir", "r", "--quiet")
    assert result.exit_code == 0, result.output
    run = workdir / "r"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    found = assert_matches_metrics_csv(run, epochs=3, steps=27)

    rows = read_metrics(run / "metrics.csv")
    losses = [v for _, v in found["step/train_loss"]]
    for e, row in enumerate(rows):
        assert sum(losses[9 * e : 9 * e + 9]) / 9 == pytest.approx(row["train_loss"], rel=1e-5)
    assert [v for _, v in found["step/lr"]] == pytest.approx([0.1] * 27)  # a constant schedule

    text = found["config/text_summary"]
    assert [step for step, _ in text] == [0]
    logged_config = yaml.safe_load("\n".join(line[4:] for line in text[0][1].splitlines()))
    assert logged_config == yaml.safe_load((run / "config.yaml").read_text())
    assert logged_config["train"]["loggers"] == ["csv", "tensorboard"]

    summary = json.loads((run / "summary.json").read_text())
    assert found["test/accuracy"] == [(3, pytest.approx(summary["test"]["accuracy"], rel=1e-6))]
    assert found["best/val_loss"] == [(3, pytest.approx(summary["best_value"], rel=1e-6))]
    for tag in ("_hparams_/session_start_info", "_hparams_/session_end_info"):
        assert found[tag] == [(3, "hparams")]
    assert "_hparams_/experiment" not in found  # TensorBoard builds it from every run's sessions
    start = next(e for e in events(run) if e.summary.value and e.summary.value[0].tag.endswith("start_info"))
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    hp = HParamsPluginData.FromString(start.summary.value[0].metadata.plugin_data.content)
    assert hp.session_start_info.hparams["optimizer.lr"].number_value == pytest.approx(0.1)
    assert hp.session_start_info.hparams["model[0].linear.units"].number_value == 32

    # histograms: the initial weights and each epoch's, of every parameter
    assert [step for step, _ in found["weights/layers.0.W"]] == [0, 1, 2, 3]
    assert {tag for tag in found if tag.startswith("weights/")} == {
        "weights/layers.0.W", "weights/layers.0.b", "weights/layers.3.W", "weights/layers.3.b"}


def _bogus(step: int, tag: str, value: float = 99.0) -> bytes:
    """One record as a killed process would have left it: logged after the last checkpoint."""
    from tensorboardX.record_writer import masked_crc32c

    summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
    data = Event(step=step, summary=summary).SerializeToString()
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def test_a_resumed_run_logs_each_step_once_and_in_order(workdir, tb_yaml, nncli, monkeypatch):
    from nncli.training.callbacks.files import MetricsWriter

    assert nncli("train", tb_yaml, "--run-dir", "straight", "--quiet").exit_code == 0

    def stop_in_epoch_two(self, trainer, batch, loss):
        if trainer.state.epoch == 1 and batch == 4:
            trainer.stop_requested = signal.SIGINT

    with monkeypatch.context() as patch:
        patch.setattr(MetricsWriter, "on_batch_end", stop_in_epoch_two, raising=False)
        assert nncli("train", tb_yaml, "--run-dir", "cut", "--quiet").exit_code == 130
    run = workdir / "cut"
    found = series(run)
    assert [s for s, _ in found["step/train_loss"]] == list(range(1, 15))  # 9 + 5 steps
    assert [s for s, _ in found["epoch/train_loss"]] == [1]

    # what a process killed after its checkpoint leaves: steps and an epoch past it, a finished
    # run's record, and a last record cut short
    (first,) = run.glob("events.out.tfevents.*")
    with open(first, "ab") as f:
        for step in (15, 16):
            f.write(_bogus(step, "step/train_loss"))
        f.write(_bogus(2, "epoch/train_loss"))
        f.write(_bogus(1, "config/text_summary"))
        f.write(_bogus(2, "_hparams_/session_start_info"))
        f.write(_bogus(17, "step/train_loss")[:-7])

    resumed = nncli("train", "--resume", "cut", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    found = assert_matches_metrics_csv(run, epochs=3, steps=27)
    assert 99.0 not in [v for _, v in found["step/train_loss"] + found["epoch/train_loss"]]
    assert [s for s, _ in found["config/text_summary"]] == [0, 1]  # each session's, once
    assert [s for s, _ in found["_hparams_/session_start_info"]] == [3]
    assert [s for s, _ in found["weights/layers.0.W"]] == [0, 1, 2, 3]

    # the same numbers as the run never interrupted
    straight = series(workdir / "straight")
    for tag in ("step/train_loss", "epoch/train_loss", "epoch/val_acc"):
        assert [v for _, v in found[tag]] == pytest.approx([v for _, v in straight[tag]], rel=1e-6)


def test_extending_a_finished_run_appends_after_it(workdir, tb_yaml, nncli):
    assert nncli("train", tb_yaml, "--run-dir", "r", "--quiet", "--set", "train.epochs=2").exit_code == 0
    assert nncli("train", "--resume", "r", "--quiet", "--set", "train.epochs=3").exit_code == 0
    found = assert_matches_metrics_csv(workdir / "r", epochs=3, steps=27)
    assert [s for s, _ in found["test/accuracy"]] == [3]  # the first finish's, at 2, is the second's
    assert [s for s, _ in found["_hparams_/session_end_info"]] == [3]


def test_a_resume_may_turn_tensorboard_on(workdir, spiral, nncli):
    (workdir / "s.yaml").write_text(spiral({"train.epochs": 2}))
    assert nncli("train", "s.yaml", "--run-dir", "r", "--quiet", "--set", "train.epochs=1").exit_code == 0
    assert not list((workdir / "r").glob("events.*"))
    result = nncli("train", "--resume", "r", "--quiet", "--set", "train.epochs=2",
                   "--set", "train.loggers=[csv, tensorboard]")
    assert result.exit_code == 0, result.output
    found = series(workdir / "r")
    assert [s for s, _ in found["epoch/val_loss"]] == [2]
    assert [s for s, _ in found["step/train_loss"]] == list(range(10, 19))


def test_without_tensorboardx_check_and_train_say_what_to_install(workdir, tb_yaml, nncli, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` fails
    for command in ("check", "train"):
        result = nncli(command, tb_yaml, "--run-dir", "r") if command == "train" else nncli(command, tb_yaml)
        assert result.exit_code == 2, result.output
        assert "train.loggers: the tensorboard logger needs the tensorboardX package" in result.output
        assert "pip install 'nncli[tensorboard]'" in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (workdir / "r").exists()


def test_a_logged_run_is_used_without_tensorboardx(workdir, tb_yaml, nncli, monkeypatch):
    assert nncli("train", tb_yaml, "--run-dir", "r", "--quiet", "--set", "train.epochs=1").exit_code == 0
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    for command in (("eval", "r"), ("runs", "."), ("plot", "r", "-o", "c.png")):
        result = nncli(*command)
        assert result.exit_code == 0, (command, result.output)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"loggers": ["csv", "tensorbord"]}, 'train.loggers[1]: unknown logger \'tensorbord\' (did you mean'
                                             ' "tensorboard"?); valid loggers: csv, tensorboard'),
        ({"loggers": "wandb"}, "train.loggers: unknown logger 'wandb'; valid loggers: csv, tensorboard"),
        ({"loggers": {"tensorboard": 1}}, "train.loggers: expected a list like [csv, tensorboard]"),
        ({"tensorboard": {"histograms": True}}, "train.tensorboard: options for the tensorboard logger,"
                                                " which train.loggers does not list"),
        ({"loggers": ["tensorboard"], "tensorboard": {"histogram": True}},
         'train.tensorboard.histogram: unknown key (did you mean "histograms"?)'),
        ({"loggers": ["tensorboard"], "tensorboard": {"histograms": "yes"}},
         "train.tensorboard.histograms: expected true or false, got 'yes'"),
    ],
)
def test_logger_mistakes_are_config_errors(workdir, spiral, nncli, train, message):
    config = yaml.safe_load(spiral())
    config["train"].update(train)
    (workdir / "x.yaml").write_text(yaml.safe_dump(config))
    result = nncli("check", "x.yaml")
    assert result.exit_code == 2
    assert message in result.output


def test_csv_is_always_written_and_configs_without_loggers_are_unchanged(workdir, spiral, nncli):
    (workdir / "s.yaml").write_text(spiral({"train.epochs": 1, "train.loggers": "tensorboard"}))
    assert nncli("train", "s.yaml", "--run-dir", "r", "--quiet").exit_code == 0
    assert read_metrics(workdir / "r" / "metrics.csv")
    assert yaml.safe_load((workdir / "r" / "config.yaml").read_text())["train"]["loggers"] == [
        "csv", "tensorboard"]
    (workdir / "p.yaml").write_text(spiral({"train.epochs": 1}))
    assert nncli("train", "p.yaml", "--run-dir", "plain", "--quiet").exit_code == 0
    train = yaml.safe_load((workdir / "plain" / "config.yaml").read_text())["train"]
    assert "loggers" not in train and "tensorboard" not in train  # sweeps' run names stay as they were
