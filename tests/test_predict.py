"""`nncli predict` and `nncli export`: a trained model applied to new files, from the checkpoint
alone; and portable .npz weights that give the same predictions."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import config_text
from PIL import Image

from nncli.data.mnist import load_mnist_small
from nncli.errors import NncliError
from nncli.training import checkpoint, export

ROOT = Path(__file__).resolve().parents[1]


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """configs/quickstart.yaml trained as `make quickstart` trains it, in a folder of its own;
    (the run directory, the embedded MNIST test images and labels)."""
    from click.testing import CliRunner

    from nncli.cli import cli

    folder = tmp_path_factory.mktemp("quickstart")
    previous = Path.cwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(cli, ["train", str(ROOT / "configs" / "quickstart.yaml"), "-q"])
    finally:
        os.chdir(previous)
    assert result.exit_code == 0, result.output
    [run] = (folder / "runs" / "quickstart").iterdir()
    raw = load_mnist_small(data_dir=folder, rng=np.random.default_rng(0))
    return run, raw.x_test, raw.y_test


def save_picture(digit: np.ndarray, path: Path) -> Path:
    """A test-set digit as a user's picture: dark on light, 200x200."""
    Image.fromarray(255 - digit[0]).resize((200, 200), Image.Resampling.BICUBIC).save(path)
    return path


def test_a_picture_of_a_digit_is_read_as_that_digit(quickstart, nncli, tmp_path):
    run, x, y = quickstart
    model_says = nncli("predict", run, _npz(tmp_path / "x.npz", x=x[:50]))
    predicted = [row["class"] for row in rows_of(model_says.stdout)]
    # a digit the model gets right from its own pixels: the picture must say the same
    i = next(i for i in range(50) if predicted[i] == str(y[i]))
    picture = save_picture(x[i], tmp_path / "digit.png")
    result = nncli("predict", run, picture, "--invert")
    assert result.exit_code == 0, result.output
    [row] = rows_of(result.stdout)
    assert row == {"input": str(picture), "class": str(y[i]), "probability": row["probability"]}
    assert 0.5 < float(row["probability"]) <= 1
    # with no flag, its light background says it is to be inverted, and a note says so
    auto = nncli("predict", run, picture)
    assert rows_of(auto.stdout) == [row]
    assert "note: 1 picture was dark on light and was inverted" in auto.stderr
    # --no-invert keeps it as it is: a light digit's negative
    kept = nncli("predict", run, picture, "--no-invert")
    assert rows_of(kept.stdout)[0]["probability"] != row["probability"] and "inverted" not in kept.stderr


def test_a_folder_of_twenty_pictures_is_mostly_right(quickstart, nncli, tmp_path):
    run, x, y = quickstart
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(20):
        save_picture(x[i * 50], folder / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not an image: skipped")
    result = nncli("predict", run, folder, "--invert", "--top-k", "3", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)["predictions"]
    assert [Path(r["input"]).name for r in records] == [f"{i:02d}.png" for i in range(20)]
    right = sum(r["class"] == str(y[i * 50]) for i, r in enumerate(records))
    assert right >= 18, f"{right} of 20 right"
    for record in records:
        top = record["top"]
        assert len(top) == 3 and top[0]["class"] == record["class"]
        assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]


def test_an_unreadable_picture_is_named_and_skipped_the_rest_predicted(quickstart, nncli, tmp_path):
    """Issue 24: a folder of 5 good digits and one damaged file gives 5 predictions, names the
    damaged one on stderr and exits 1, so a script notices."""
    run, x, y = quickstart
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(5):
        save_picture(x[i * 50], folder / f"{i}.png")
    good = (folder / "0.png").read_bytes()
    (folder / "3b.png").write_bytes(good[: len(good) // 3])  # cut short, as by a failed copy
    result = nncli("predict", run, folder, "--invert", "-o", tmp_path / "out.csv")
    assert result.exit_code == 1, result.output
    written = rows_of((tmp_path / "out.csv").read_text())
    assert [Path(r["input"]).name for r in written] == [f"{i}.png" for i in range(5)]
    assert f"skipped: cannot read {folder / '3b.png'} as an image: " in result.stderr
    assert "1 input file could not be read and was skipped; 5 predictions written" in result.stderr
    assert "Traceback" not in result.output
    # listed one by one, the same; only the damaged file given: nothing to predict, one line
    listed = nncli("predict", run, folder / "1.png", folder / "3b.png", "--invert")
    assert listed.exit_code == 1 and len(rows_of(listed.stdout)) == 1
    alone = nncli("predict", run, folder / "3b.png")
    assert alone.exit_code == 1 and not alone.stdout
    assert alone.stderr.startswith(f"error: no input could be read: cannot read {folder / '3b.png'}")


def _pictures_script():
    """scripts/make_digit_pictures.py as a module: the pictures the README's figures come from."""
    import importlib.util

    path = ROOT / "scripts" / "make_digit_pictures.py"
    spec = importlib.util.spec_from_file_location("make_digit_pictures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pictures_as_users_make_them_are_read_right_with_no_flags(quickstart, nncli, tmp_path):
    """Issue 18's four forms, 20 digits each (50 each in the measured figures): dark ink on noisy
    off-white paper (JPEG), white strokes on transparency (RGBA PNG), a digit in a wide canvas, a
    small digit off-centre on a big white page. The old reading (no inversion without --invert,
    transparency on white, stretching, no framing) got 2% to 16% of each right."""
    run, _, _ = quickstart
    script = _pictures_script()
    for form, folder in script.make(tmp_path, 20, seed=1).items():
        result = nncli("predict", run, folder, "--json")
        assert result.exit_code == 0, result.output
        records = json.loads(result.stdout)["predictions"]
        right, total = script.score(records)
        assert total == 20 and right >= 16, f"{form}: {right} of {total} right"
        assert "note: 20 pictures were framed as the training images are" in result.stderr
        inverted = [r["inverted"] for r in records]
        if form in ("paper", "small"):
            assert all(inverted)
            assert "note: 20 pictures were dark on light and were inverted" in result.stderr
        elif form == "transparent":
            assert not any(inverted) and "inverted" not in result.stderr


def test_a_checkpoint_without_an_image_profile_inverts_light_pictures_and_does_not_frame(
    quickstart, nncli, tmp_path
):
    run, x, _ = quickstart
    saved = checkpoint.load(run)
    profile = saved["data"]["images"]  # what training recorded of MNIST
    assert profile["framed"] and profile["light_ink"] and profile["background"] == 0
    assert profile["ink_box"] == 20
    del saved["data"]["images"]  # as an older nncli wrote it
    saved.pop("path")
    old = tmp_path / "old.pkl"
    checkpoint.save(old, saved)
    picture = save_picture(x[0], tmp_path / "digit.png")
    result = nncli("predict", old, picture, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["predictions"][0]["inverted"] is True
    assert "were inverted" not in result.stderr and "was inverted" in result.stderr
    assert "framed" not in result.stderr
    # a forced --invert says nothing: the user asked for it
    forced = nncli("predict", old, picture, "--invert", "--json")
    assert json.loads(forced.stdout)["predictions"][0]["inverted"] is True and forced.stderr == ""


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_labels_report_what_eval_would(quickstart, nncli, tmp_path):
    run, x, y = quickstart
    inputs = _npz(tmp_path / "test.npz", x=x, y=y)
    result = nncli("predict", run, inputs, "--labels", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    evaluation = json.loads(nncli("eval", run, "--json").stdout)
    assert out["metrics"]["accuracy"] == evaluation["accuracy"]
    assert out["metrics"]["loss"] == pytest.approx(evaluation["loss"], rel=1e-6)
    assert out["metrics"]["confusion_matrix"] == evaluation["confusion_matrix"]
    assert all(record["label"] == str(label) for record, label in zip(out["predictions"], y, strict=True))
    assert "accuracy" in result.stderr



def test_one_hot_labels_are_read_as_classes_with_a_note(quickstart, nncli, tmp_path):
    run, x, y = quickstart
    as_numbers = nncli("predict", run, _npz(tmp_path / "a.npz", x=x, y=y), "--labels", "--json").stdout
    result = nncli("predict", run, _npz(tmp_path / "b.npz", x=x, y=np.eye(10)[y]), "--labels", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout.replace("b.npz", "a.npz") == as_numbers
    assert (f"note: {tmp_path / 'b.npz'} holds one-hot rows of 10 classes (as Keras' to_categorical"
            " writes them), read as the class numbers y.argmax(1)") in result.stderr
    result = nncli("predict", run, _npz(tmp_path / "c.npz", x=x, y=np.eye(12)[y]), "--labels")
    assert result.exit_code != 0
    assert "holds one-hot rows of 12 classes; the model has 10" in result.stderr


def test_export_round_trip_gives_identical_predictions(quickstart, nncli, tmp_path):
    import nncli as api

    run, x, y = quickstart
    exported = tmp_path / "model.npz"
    result = nncli("export", run, "-o", exported)
    assert result.exit_code == 0, result.output
    with np.load(exported, allow_pickle=False) as npz:  # plain arrays, by their names
        assert {"layers.0.W", "layers.0.b", "nncli.json"} <= set(npz.files)
        header = json.loads(npz["nncli.json"].tobytes())
    assert header["params"][0] == "layers.0.W" and header["config"]["name"] == "quickstart"
    original, loaded = api.load(run), api.load(exported)
    assert np.array_equal(original.predict(x), loaded.predict(x))
    assert list(original.predict_classes(x)) == list(loaded.predict_classes(x))
    inputs = _npz(tmp_path / "x.npz", x=x[:30])
    assert nncli("predict", exported, inputs).stdout == nncli("predict", run, inputs).stdout
    # eval takes the export as a checkpoint too, with the same figures
    from_export = json.loads(nncli("eval", exported, "--json").stdout)
    from_pickle = json.loads(nncli("eval", run, "--json").stdout)
    assert from_export["accuracy"] == from_pickle["accuracy"]
    assert from_export["loss"] == from_pickle["loss"]
    # and a model loaded from the export exports the same arrays again
    again = loaded.export(tmp_path / "again.npz")
    with np.load(exported) as a, np.load(again) as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "nncli.json")
    # its errors name the Python argument, not the command line's option
    with pytest.raises(NncliError) as caught:
        loaded.export(tmp_path / "x.h5")
    assert str(caught.value).endswith('or give format="npz" or format="onnx"')


def test_hostile_or_damaged_model_files_are_refused_in_one_line(quickstart, nncli, tmp_path):
    run, x, _ = quickstart
    inputs = _npz(tmp_path / "x.npz", x=x[:3])
    exported = tmp_path / "model.npz"
    assert nncli("export", run, "-o", exported).exit_code == 0
    data = exported.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(np.random.default_rng(0).bytes(300))

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps({"format_version": 1, "config": Exploit(), "model": {}, "epoch": 1}))
    objects = tmp_path / "objects.npz"  # an object array needs pickle to load
    np.savez(objects, **{"nncli.json": np.array([{"format": "nncli model"}], dtype=object)})
    forged = tmp_path / "forged.npz"  # valid arrays, a header naming one that is not there
    with np.load(exported) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["nncli.json"].tobytes())
    header["params"].append("layers.9.W")
    del header["digest"]  # as an export from before digests, whose contents are checked alone
    arrays["nncli.json"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(forged, **arrays)

    for bad, says in (
        (truncated, "not an nncli model export"),
        (garbage, "garbage.pkl"),
        (hostile, "hostile.pkl"),
        (objects, "not an nncli model export"),
        (forged, "layers.9.W"),
    ):
        result = nncli("predict", bad, inputs)
        assert result.exit_code != 0, bad
        assert "Traceback" not in result.output
        assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "pwned").exists()


def test_inputs_the_model_cannot_take_are_one_line_naming_the_file(quickstart, nncli, tmp_path):
    run, x, _ = quickstart
    flat = _npz(tmp_path / "flat.npz", x=x[:2].reshape(2, -1))
    nothing = _npz(tmp_path / "nothing.npz", images=x[:2])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    table = tmp_path / "rows.csv"
    table.write_text("a,b\n1,2\n")
    unknown = tmp_path / "thing.dat"
    unknown.write_text("?")
    for args, says in (
        ((flat,), "flat.npz has samples of shape (784,); the model takes samples of shape (1, 28, 28)"),
        ((nothing,), "nothing.npz has no array x"),
        ((broken, "--invert"), "cannot read"),
        ((table,), "rows.csv has 2 values per row; the model takes 784"),
        ((unknown,), "cannot tell what"),
        ((tmp_path / "missing.png",), "missing.png does not exist"),
        ((flat, "--top-k", "11"), "more classes than the model's 10"),
    ):
        result = nncli("predict", run, *args)
        assert result.exit_code == 1, (args, result.output)
        assert says in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert "broken.png" in nncli("predict", run, broken).stderr


def _sine_csvs(folder: Path) -> tuple[Path, Path, Path]:
    """A sine_regression-like table with named columns: noisy training rows; test rows of the
    true function; and the test rows without their target column."""
    rng = np.random.default_rng(0)
    x_train = rng.uniform(-3, 3, 600)
    x_test = np.linspace(-2.9, 2.9, 50)
    train, test, features = folder / "train.csv", folder / "test.csv", folder / "new.csv"
    noise = rng.normal(0, 0.05, 600)
    rows = (f"{a:.6f},{np.sin(a) + n:.6f}\n" for a, n in zip(x_train, noise, strict=True))
    train.write_text("angle,sine\n" + "".join(rows))
    test.write_text("angle,sine\n" + "".join(f"{a:.6f},{np.sin(a):.6f}\n" for a in x_test))
    features.write_text("angle\n" + "".join(f"{a:.6f}\n" for a in x_test))
    return train, test, features


# the conftest's sine config, wider and longer, on CSV files of angles and their sines
SINE = {
    "name": "sine_csv",
    "seed": 0,
    "data": {"dataset": "csv", "path": "train.csv", "test_path": "test.csv", "target": "sine",
             "val_size": 0.1, "preprocess": ["standardize"]},
    "model": [{"linear": {"units": 32}}, "tanh", {"linear": {"units": 32}}, "tanh", {"linear": {"units": 1}}],
    "train": {"epochs": 40, "batch_size": 32},
}


def test_csv_regression_predictions_have_the_mse_eval_reported(nncli, workdir):
    train, test, features = _sine_csvs(workdir)
    (workdir / "sine.yaml").write_text(config_text("sine", **SINE))
    assert nncli("train", "sine.yaml", "-q", "--run-dir", "run").exit_code == 0
    evaluation = json.loads(nncli("eval", "run", "--json").stdout)
    train.rename(workdir / "gone.csv")  # predict needs the checkpoint alone, eval the data
    result = nncli("predict", "run", features, "-o", "predictions.csv")
    assert result.exit_code == 0, result.output
    rows = rows_of((workdir / "predictions.csv").read_text())
    assert list(rows[0]) == ["input", "sine"]  # the target column's name
    assert rows[0]["input"] == f"{features}:2"  # the file's line
    predicted = np.array([float(r["sine"]) for r in rows])
    truth = np.array([float(line.split(",")[1]) for line in test.read_text().splitlines()[1:]])
    mse = float(np.mean((predicted - truth) ** 2))
    assert mse == pytest.approx(evaluation["mse"], rel=1e-6)
    assert mse < 0.01  # and it learned the function
    # a target column in the input is ignored, or read with --labels
    assert nncli("predict", "run", test, "-o", "same.csv").exit_code == 0
    assert [r["sine"] for r in rows_of((workdir / "same.csv").read_text())] == [r["sine"] for r in rows]
    labelled = nncli("predict", "run", test, "--labels", "--json")
    assert json.loads(labelled.stdout)["metrics"]["mse"] == pytest.approx(mse, rel=1e-5)
    # a file without the feature column is named, with the column
    (workdir / "wrong.csv").write_text("angel\n0.5\n")
    wrong = nncli("predict", "run", "wrong.csv")
    assert wrong.exit_code == 1
    assert 'wrong.csv has no column "angle", a feature column' in wrong.stderr
    assert 'did you mean "angel"' in wrong.stderr


def test_class_names_of_a_csv_are_what_predict_writes(nncli, workdir):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(300, 2))
    names = np.where(points[:, 0] > 0, "east", "west")
    lines = ["x,y,side"] + [f"{a:.4f},{b:.4f},{n}" for (a, b), n in zip(points, names, strict=True)]
    (workdir / "sides.csv").write_text("\n".join(lines) + "\n")
    (workdir / "sides.yaml").write_text(
        "data: {dataset: csv, path: sides.csv, target: side}\n"
        "model: [{linear: {units: 8}}, relu, {linear: {units: 2}}]\n"
        "loss: softmax_cross_entropy\noptimizer: {type: adam, lr: 0.05}\n"
        "train: {epochs: 20, batch_size: 32}\n"
    )
    assert nncli("train", "sides.yaml", "-q", "--run-dir", "run").exit_code == 0
    (workdir / "new.csv").write_text("y,x\n0,2.5\n0,-2.5\n")  # columns by name, in any order
    rows = rows_of(nncli("predict", "run", "new.csv").stdout)
    assert [r["class"] for r in rows] == ["east", "west"]


def test_a_checkpoint_without_an_input_record_says_so(quickstart, nncli, tmp_path):
    run, x, _ = quickstart
    saved = checkpoint.load(run)
    del saved["data"]["input_shape"]
    saved.pop("path")
    old = tmp_path / "old.pkl"
    checkpoint.save(old, saved)
    result = nncli("predict", old, _npz(tmp_path / "x.npz", x=x[:2]))
    assert result.exit_code == 1
    assert "did not record its inputs' shape" in result.stderr


def test_export_needs_an_npz_name(quickstart, nncli, tmp_path):
    run, _, _ = quickstart
    result = nncli("export", run, "-o", tmp_path / "model.pkl")
    assert result.exit_code == 1 and "name it model.npz" in result.stderr
    assert not (tmp_path / "model.pkl").exists()


def test_export_format_by_suffix_or_flag_in_one_line(quickstart, nncli, tmp_path):
    run, _, _ = quickstart
    result = nncli("export", run, "-o", tmp_path / "model.npz", "--format", "onnx")
    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path / 'model.npz'}: its suffix says npz but --format onnx was"
                             " given; name it model.onnx\n")
    result = nncli("export", run, "-o", tmp_path / "model.bin", "--format", "npz")
    assert result.exit_code == 1 and "name it model.npz" in result.stderr
    assert not list(tmp_path.iterdir())


def test_onnx_export_without_the_onnx_package_says_what_to_install(quickstart, nncli, tmp_path, monkeypatch):
    run, _, _ = quickstart
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    result = nncli("export", run, "-o", tmp_path / "model.onnx")
    assert result.exit_code == 1
    assert result.stderr == ("error: ONNX export needs the onnx package: pip install 'nncli[onnx]'"
                             " (or pip install onnx)\n")
    assert not list(tmp_path.iterdir())


def test_image_inputs_need_an_image_model(nncli, workdir, spiral):
    (workdir / "spiral.yaml").write_text(spiral())
    assert nncli("train", "spiral.yaml", "-q", "--run-dir", "run").exit_code == 0
    picture = workdir / "p.png"
    Image.new("L", (8, 8)).save(picture)
    result = nncli("predict", "run", picture)
    assert result.exit_code == 1 and "not pictures" in result.stderr
    assert checkpoint.load(workdir / "run")["data"]["images"] is None  # no image profile
    shutil.rmtree(workdir / "run")


def _table_model(nncli, folder: Path, text: str, data: str, name: str = "table") -> str:
    """Train a small classifier on the CSV `text` with the csv options `data`; its run dir."""
    (folder / f"{name}.csv").write_text(text)
    (folder / f"{name}.yaml").write_text(
        f"data: {{dataset: csv, path: {name}.csv, {data}}}\n"
        "model: [{linear: {units: 8}}, relu, {linear: {units: 2}}]\n"
        "loss: softmax_cross_entropy\noptimizer: {type: adam, lr: 0.05}\ntrain: {epochs: 3, batch_size: 8}\n"
    )
    result = nncli("train", f"{name}.yaml", "-q", "--run-dir", f"run_{name}")
    assert result.exit_code == 0, result.output
    return f"run_{name}"


def test_what_the_model_knows_decides_whether_a_first_line_is_a_header(nncli, workdir):
    rows = "".join(f"{i % 5}.5,{i % 3},{'up' if i % 2 else 'down'}\n" for i in range(40))
    # trained without a header, on string labels: its own file is all data, labels included
    run = _table_model(nncli, workdir, rows, "header: false, target: -1", "plain")
    result = nncli("predict", run, "plain.csv", "--labels", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["predictions"]) == 40
    # a header of numbers (what pandas writes for unnamed columns) is still the header
    run = _table_model(nncli, workdir, "0,1,label\n" + rows, "target: label", "numbered")
    (workdir / "new.csv").write_text("0,1\n1.5,2\n0.5,1\n")
    result = nncli("predict", run, "new.csv")
    assert [r["input"] for r in rows_of(result.stdout)] == ["new.csv:2", "new.csv:3"]
    # and a model trained with a header reads a headerless file, string labels included
    (workdir / "bare.csv").write_text("1.5,2,up\n0.5,1,down\n")
    result = nncli("predict", run, "bare.csv", "--labels")
    assert result.exit_code == 0, result.output
    assert [r["label"] for r in rows_of(result.stdout)] == ["up", "down"]


def test_a_headerless_file_of_class_names_keeps_every_row_in_training_and_predict(nncli, workdir):
    # The UCI iris.data layout: no header, a class name on every line. Its first line used to
    # be taken for a header, in training and again in predict: one sample lost each time.
    rows = "".join(f"{i % 5}.5,{i % 3},{'up' if i % 2 else 'down'}\n" for i in range(40))
    run = _table_model(nncli, workdir, rows, "target: -1", "bare")
    result = nncli("predict", run, "bare.csv", "--labels")
    assert result.exit_code == 0, result.output
    predicted = rows_of(result.stdout)
    assert [r["input"] for r in predicted] == [f"bare.csv:{i}" for i in range(1, 41)]
    assert predicted[0]["label"] == "down"
    (workdir / "one.csv").write_text("2.5,1\n")  # one line, the features alone: data
    assert [r["input"] for r in rows_of(nncli("predict", run, "one.csv").stdout)] == ["one.csv:1"]


def test_a_header_naming_a_column_twice_is_refused_at_predict(nncli, workdir):
    rows = "a,b,label\n" + "".join(f"{i % 5},{i % 3},{i % 2}\n" for i in range(40))
    run = _table_model(nncli, workdir, rows, "target: label", "named")
    (workdir / "twice.csv").write_text("b,a,b\n1,2,3\n")  # which b is the model's b?
    result = nncli("predict", run, "twice.csv")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        'error: twice.csv: column "b" appears twice in the header, at positions 0 and 2 (counting from 0)'
    )


def test_a_column_the_model_never_read_does_not_make_a_header(nncli, workdir):
    # header: false at training, with a notes column left out: its one note on the first line
    # is not a header at predict either.
    rows = "".join(f"{i % 5},{i % 3},{'first batch' if i == 0 else ''},{i % 2}\n" for i in range(40))
    run = _table_model(nncli, workdir, rows, "header: false, target: -1, drop: [2]", "notes")
    result = nncli("predict", run, "notes.csv")
    assert result.exit_code == 0, result.output
    assert len(rows_of(result.stdout)) == 40


def test_labels_written_as_whole_floats_are_the_classes_they_name(nncli, workdir):
    rows = "".join(f"{i % 7},{float(i % 2)}\n" for i in range(40))
    run = _table_model(nncli, workdir, "x,y\n" + rows, "target: y", "floats")
    result = nncli("predict", run, "floats.csv", "--labels")
    assert result.exit_code == 0, result.output
    assert {r["label"] for r in rows_of(result.stdout)} == {"0", "1"}


def test_labels_kept_in_another_file_cannot_be_read_from_the_inputs(nncli, workdir):
    (workdir / "labels.csv").write_text("".join(f"{i % 2}\n" for i in range(20)))
    rows = "a,b\n" + "".join(f"{i},{i % 3}\n" for i in range(20))
    run = _table_model(nncli, workdir, rows, "labels_path: labels.csv", "split")
    result = nncli("predict", run, "split.csv", "--labels")
    assert result.exit_code == 1 and "labels in another file" in result.stderr
    assert nncli("predict", run, "split.csv").exit_code == 0


def _forged(exported: Path, folder: Path, change) -> Path:
    with np.load(exported) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["nncli.json"].tobytes())
    change(header)
    # a forger writes a digest that matches: the checks of the contents must hold on their own
    header["digest"] = {export.DIGEST: export.digest(header, arrays)}
    arrays["nncli.json"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    path = folder / f"forged{len(list(folder.glob('forged*')))}.npz"
    np.savez(path, **arrays)
    return path


def test_a_crafted_export_header_is_refused_in_one_line(quickstart, nncli, tmp_path):
    run, x, _ = quickstart
    exported = tmp_path / "model.npz"
    assert nncli("export", run, "-o", exported).exit_code == 0
    inputs = _npz(tmp_path / "x.npz", x=x[:2])
    changes = [
        lambda h: h.update(epoch="x"),
        lambda h: h["data"].update(class_names=["a", "b"]),
        lambda h: h["data"].update(raw_shape=[1, 28, 27]),
        lambda h: h["data"].update(input_shape=[0]),
        lambda h: h["data"].update(columns=1),
        lambda h: h["data"].update(pixel_max=-1),
        lambda h: h["data"]["images"].update(background=1e9),
        lambda h: h["data"]["images"].update(centre="middle"),
        lambda h: h["data"].update(images=[0.0]),
        lambda h: h["preprocessor"].update(dtype=[]),
        lambda h: h["data"].update(num_outputs=3),
        lambda h: h.update(params="layers.0.W"),
        # a config asking for far more than the file holds, drawn or zero-initialized
        lambda h: h["config"]["model"][0]["linear"].update(units=200_000),
        lambda h: h["config"]["model"][0]["linear"].update(units=200_000, init="zeros"),
    ]
    for change in changes:
        forged = _forged(exported, tmp_path, change)
        result = nncli("predict", forged, inputs)
        assert result.exit_code == 1, (forged, result.output)
        assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
        assert str(forged) in result.stderr, result.stderr
    # eval rebuilds a checkpoint's model the same way, within the size of its weights
    huge = _forged(exported, tmp_path, lambda h: h["config"]["model"][0]["linear"].update(units=200_000))
    result = nncli("eval", huge)
    assert result.exit_code == 1 and "larger than the weights it holds" in result.stderr


def test_pictures_need_a_model_that_knows_its_pixel_range(nncli, workdir):
    import nncli as api

    raw = load_mnist_small(data_dir=workdir, rng=np.random.default_rng(0))
    x = raw.x_train[:200].astype(np.float32) / 255  # floats: no pixel range is known
    config = {
        "data": {"dataset": "arrays", "preprocess": ["flatten"]},
        "model": [{"linear": {"units": 10}}],
        "loss": "softmax_cross_entropy",
        "optimizer": {"type": "sgd", "lr": 0.1},
        "train": {"epochs": 1},
    }
    run = api.train(config, data={"x_train": x, "y_train": raw.y_train[:200]})
    picture = save_picture(raw.x_test[0], workdir / "p.png")
    result = nncli("predict", run.dir, picture)
    assert result.exit_code == 1 and "no pixel range" in result.stderr
    model = api.load(run.dir)
    assert model.predict_classes(x[:3]).dtype.kind == "i"  # MNIST's names are its numbers
    with pytest.raises(api.ConfigError, match="batch_size"):
        model.predict(x[:3], batch_size=0)


def test_an_export_gets_the_permissions_of_any_new_file(quickstart, nncli, tmp_path):
    run, _, _ = quickstart
    mask = os.umask(0o027)
    try:
        assert nncli("export", run, "-o", tmp_path / "shared.npz").exit_code == 0
    finally:
        os.umask(mask)
    assert (tmp_path / "shared.npz").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600


def test_a_table_model_reads_rows_from_a_file_of_any_suffix(workdir, nncli):
    # UCI's iris.data: training reads it, so predict must too
    rows = "".join(f"{i % 5}.1,{i % 3}.5,{('setosa', 'virginica')[i % 2]}\n" for i in range(30))
    (workdir / "iris.data").write_text(rows)
    (workdir / "iris.yaml").write_text(
        "data: {dataset: csv, path: iris.data, target: -1}\nmodel: [{linear: {units: 2}}]\n"
        "loss: softmax_cross_entropy\noptimizer: {type: sgd, lr: 0.1}\ntrain: {epochs: 1}\n")
    assert nncli("train", "iris.yaml", "--run-dir", "run", "-q").exit_code == 0
    result = nncli("predict", "run", "iris.data")
    assert result.exit_code == 0, result.output
    assert len(rows_of(result.stdout)) == 30 and rows_of(result.stdout)[0]["input"] == "iris.data:1"


def test_no_invert_on_light_pictures_is_told_to_leave_the_flag_out(quickstart, nncli, tmp_path):
    run, x, _ = quickstart
    folder = tmp_path / "light"
    folder.mkdir()
    for i in range(3):
        save_picture(x[i], folder / f"{i}.png")
    result = nncli("predict", run, folder, "--no-invert")
    assert result.exit_code == 0
    [line] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "polarity is reversed; --no-invert forced it" in line and "255 - x" not in line


@pytest.mark.parametrize("records, metrics", [
    ([{"input": "a", "class": "1", "probability": 0.5, "top": [{"class": "1", "probability": 0.5}]},
      {"input": "b", "class": "2", "probability": 0.25, "inverted": True}],
     {"accuracy": 0.5, "confusion": [[1]]}),
    ([], None),
    ([{"input": "x.csv:1", "value": 1.5}], None),
])
def test_json_written_a_record_at_a_time_is_what_json_dumps_writes(records, metrics):
    from nncli.commands.predict import Prediction

    made = Prediction([], [], records, metrics, []).to_json()
    assert made == json.dumps({"predictions": records, "metrics": metrics}, indent=2)


def test_a_blank_picture_is_warned_of(quickstart, nncli, tmp_path):
    run, x, _ = quickstart
    Image.fromarray(np.full((200, 200), 255, np.uint8)).save(tmp_path / "blank.png")
    save_picture(x[0], tmp_path / "digit.png")
    result = nncli("predict", run, tmp_path / "blank.png", tmp_path / "digit.png")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 1 picture showed nothing that stands out from its background (blank, or too"
                        " faint to read): its prediction means little"]
