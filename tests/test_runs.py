"""`nncli runs`: a table of the runs under a folder, read from the files each run writes."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import statistics

import pytest


@pytest.fixture
def folder(workdir, nncli, spiral, monkeypatch):
    """runs/ holding: seeds 0 and 1 of one config, a third seed of another learning rate, an
    early-stopped run, a diverged one and one interrupted in its second epoch."""
    from nncli.training.callbacks.files import MetricsWriter

    (workdir / "spiral.yaml").write_text(spiral({"train.epochs": 3}))

    def train(run, *sets, code=0):
        args = [a for s in sets for a in ("--set", s)]
        result = nncli("train", "spiral.yaml", "--run-dir", f"runs/{run}", "--quiet", *args)
        assert result.exit_code == code, result.output

    train("seed0", "seed=0")
    train("seed1", "seed=1")
    train("other", "seed=2", "optimizer.lr=0.02")
    train("early", "train.early_stopping={monitor: val_loss, patience: 1}", "train.epochs=40",
          "optimizer.lr=0.5")
    train("nan", "optimizer.lr=1.0e+30", "optimizer.momentum=0.0", code=3)

    def stop(self, trainer, batch, loss):
        if trainer.state.epoch == 1 and batch == 2:
            trainer.stop_requested = signal.SIGINT

    with monkeypatch.context() as patch:
        patch.setattr(MetricsWriter, "on_batch_end", stop, raising=False)
        train("cut", "optimizer.lr=0.05", code=130)
    return workdir / "runs"


def table(stdout: str) -> dict[str, list[str]]:
    """run folder name -> the row's cells (columns are two or more spaces apart)."""
    import re

    lines = stdout.strip().splitlines()
    return {re.split(r"\s{2,}", line)[0].split("/")[-1]: re.split(r"\s{2,}", line) for line in lines[1:]}


def val_accs(run) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["val_acc"]) for r in csv.DictReader(f)]


def test_every_run_with_its_status_epochs_and_metrics(folder, nncli):
    result = nncli("runs")
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert set(rows) == {"seed0", "seed1", "other", "early", "nan", "cut"}
    status = {name: row[4] for name, row in rows.items()}
    assert status == {"seed0": "finished", "seed1": "finished", "other": "finished",
                      "early": "early-stopped", "nan": "diverged", "cut": "interrupted"}
    assert rows["seed0"][3] == "3/3" and rows["cut"][3] == "1/3" and rows["nan"][3] == "0/3"
    summary = json.loads((folder / "seed0" / "summary.json").read_text())
    assert rows["seed0"][5] == f"val_acc {max(val_accs(folder / 'seed0')) * 100:.2f}%"
    assert rows["seed0"][6] == f"test_acc {summary['test']['accuracy'] * 100:.2f}%"
    assert rows["cut"][6] == "-"  # no summary yet
    assert rows["seed1"][7] == "1"


def test_machines_get_the_same_rows(folder, nncli):
    as_json = json.loads(nncli("runs", "--json").stdout)
    as_csv = list(csv.DictReader(io.StringIO(nncli("runs", "--csv").stdout)))
    assert [r["path"] for r in as_json] == [r["path"] for r in as_csv]
    seed0 = next(r for r in as_json if r["path"].endswith("seed0"))
    assert seed0["best_val"] == max(val_accs(folder / "seed0")) and seed0["status"] == "finished"
    assert nncli("runs", "--csv", "--json").exit_code == 1


def test_seeds_fold_into_one_row_with_mean_and_std(folder, nncli):
    rows = json.loads(nncli("runs", "--group-seeds", "--json").stdout)
    [pair] = [r for r in rows if r["seeds"] == [0, 1]]
    summaries = [json.loads((folder / s / "summary.json").read_text()) for s in ("seed0", "seed1")]
    tests = [summary["test"]["accuracy"] for summary in summaries]
    assert pair["test"] == pytest.approx(statistics.fmean(tests))
    assert pair["test_std"] == pytest.approx(statistics.stdev(tests))
    bests = [max(val_accs(folder / s)) for s in ("seed0", "seed1")]
    assert pair["best_val"] == pytest.approx(statistics.fmean(bests))
    assert len(rows) == 5  # the other learning rate stays a row of its own, as do the rest


def test_sorting_puts_the_best_first(folder, nncli):
    rows = json.loads(nncli("runs", "--sort", "test", "--json").stdout)
    tests = [r["test"] for r in rows if r["test"] is not None]
    assert tests == sorted(tests, reverse=True)
    assert rows[-1]["test"] is None
    bad = nncli("runs", "--sort", "tset")
    assert bad.exit_code == 1 and 'did you mean "test"' in bad.stderr


def test_an_empty_or_missing_folder(workdir, nncli):
    (workdir / "empty").mkdir()
    assert nncli("runs", "empty").stdout.strip() == "no runs"
    missing = nncli("runs", "nowhere")
    assert missing.exit_code == 1 and missing.stderr.strip() == "error: nowhere does not exist"


def test_a_seed_run_twice_counts_once_in_the_mean_and_std(workdir, nncli, spiral):
    (workdir / "spiral.yaml").write_text(spiral({"train.epochs": 2}))
    # named so that their order in the note (by start time, then by path) is the order they ran in
    for run, seed in (("seed0", 0), ("seed0-again", 0), ("seed1", 1)):
        result = nncli("train", "spiral.yaml", "--run-dir", f"runs/{run}", "--quiet", "--set", f"seed={seed}")
        assert result.exit_code == 0, result.output
    # the repeat scored otherwise (another machine's BLAS, say): its runs are averaged, not two seeds
    summary = json.loads((workdir / "runs" / "seed0-again" / "summary.json").read_text())
    summary["test"]["accuracy"] = 0.125
    (workdir / "runs" / "seed0-again" / "summary.json").write_text(json.dumps(summary))
    tests = {run: json.loads((workdir / "runs" / run / "summary.json").read_text())["test"]["accuracy"]
             for run in ("seed0", "seed0-again", "seed1")}
    per_seed = [(tests["seed0"] + tests["seed0-again"]) / 2, tests["seed1"]]

    result = nncli("runs", "--group-seeds", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["seeds"] == [0, 1] and row["seed_runs"] == [2, 1] and row["runs"] == 3
    assert row["test"] == pytest.approx(statistics.fmean(per_seed))
    assert row["test_std"] == pytest.approx(statistics.stdev(per_seed))  # over 2 seeds, not 3 runs
    bests = {run: max(val_accs(workdir / "runs" / run)) for run in ("seed0", "seed0-again", "seed1")}
    assert bests["seed0"] == bests["seed0-again"]  # the same seed trains the same way
    assert row["best_val"] == pytest.approx(statistics.fmean([bests["seed0"], bests["seed1"]]))
    assert row["best_val_std"] == pytest.approx(statistics.stdev([bests["seed0"], bests["seed1"]]))
    note = ("note: spiral: seed 0 ran 2 times (runs/seed0, runs/seed0-again): each seed counts once in the"
            " mean and std, its runs averaged")
    assert result.stderr.strip() == note

    shown = nncli("runs", "--group-seeds")
    assert shown.stderr.strip() == note
    [cells] = table(shown.stdout).values()
    assert cells[-1] == "0 (x2),1"
    [line] = csv.DictReader(io.StringIO(nncli("runs", "--group-seeds", "--csv").stdout))
    assert line["seeds"] == "0 1" and line["seed_runs"] == "2 1"


@pytest.mark.parametrize("damage", [
    "",                                                       # emptied
    '{"a":' * 100_000 + "1" + "}" * 100_000,                  # nested past the parser's depth
    '{"epochs_completed": 3, "final": [], "test": 5}',        # of other types
    '{"epochs_completed": 3, "final": {"epoch": 3}, "test": 5}',
], ids=["emptied", "deep", "types", "test-not-a-mapping"])
def test_a_damaged_summary_reads_as_unfinished_and_resume_writes_it_again(workdir, nncli, spiral, damage):
    (workdir / "spiral.yaml").write_text(spiral({"train.epochs": 3}))
    assert nncli("train", "spiral.yaml", "--run-dir", "runs/a", "--quiet").exit_code == 0
    summary = workdir / "runs" / "a" / "summary.json"
    original = json.loads(summary.read_text())
    summary.write_text(damage)
    listed = nncli("runs", "runs", "--json")
    assert listed.exit_code == 0 and "Traceback" not in listed.output
    [row] = json.loads(listed.stdout)
    assert row["status"] == "interrupted"
    resumed = nncli("train", "--resume", "runs/a", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    again = json.loads(summary.read_text())
    for key in ("epochs_completed", "best_epoch", "best_value", "final", "test"):
        assert again[key] == original[key], key


# not YAML; and YAML past the size any config may have (a crafted or damaged file: not read whole)
LARGE = "name: large\nseed: 3\n#" + "x" * (1 << 20) + "\n"


@pytest.mark.parametrize("damaged", ["a: [\n", LARGE], ids=["not-yaml", "too-large"])
def test_a_run_whose_config_cannot_be_read_is_listed_with_a_note(workdir, nncli, spiral, damaged):
    (workdir / "spiral.yaml").write_text(spiral({"train.epochs": 2}))
    assert nncli("train", "spiral.yaml", "--run-dir", "runs/a", "--quiet").exit_code == 0
    (workdir / "runs" / "a" / "config.yaml").write_text(damaged)
    listed = nncli("runs", "runs", "--json")
    assert listed.exit_code == 0 and "Traceback" not in listed.output
    [row] = json.loads(listed.stdout)
    assert row["status"] == "finished" and row["epochs"] == 2
    assert "config.yaml cannot be read as a config" in listed.stderr


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_config_that_is_no_regular_file_is_not_opened(tmp_path, kind):
    """config.yaml as a fifo (opening it waits for a writer) or a folder; a link to /dev/zero
    (which never ends) is turned away by the same check, and is not tried here: were the check
    gone, reading it would fill the memory."""
    import threading

    from nncli.training.rundir import read_run_config

    config = tmp_path / "config.yaml"
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no fifos here")
        os.mkfifo(config)
    else:
        config.mkdir()
    found = []
    reader = threading.Thread(target=lambda: found.append(read_run_config(tmp_path)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert found == [None]
