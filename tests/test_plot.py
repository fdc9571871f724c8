"""`nncli plot`: curves of runs trained in the test, in the format the file name asks for."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def runs(tmp_path_factory, nncli, spiral) -> Path:
    """alpha, beta (named by --set name=...) and a/b (two runs of the same config)."""
    root = tmp_path_factory.mktemp("runs")
    (root / "spiral.yaml").write_text(spiral())
    for folder, sets in (
        ("alpha", ["--set", "name=alpha"]),
        ("beta", ["--set", "name=beta", "--set", "optimizer.lr=0.02"]),
        ("a", []),
        ("b", ["--set", "seed=4"]),
    ):
        result = nncli("train", root / "spiral.yaml", "--run-dir", root / folder, "--quiet", *sets)
        assert result.exit_code == 0, result.output
    return root


def svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return ["".join(node.itertext()) for node in root.iter("{http://www.w3.org/2000/svg}text")]


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf", ".PNG"])
def test_the_extension_picks_the_format(runs, tmp_path, suffix, nncli):
    out = tmp_path / f"curves{suffix}"
    result = nncli("plot", runs / "alpha", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {out}"
    data = out.read_bytes()
    if suffix.lower() == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    elif suffix == ".pdf":
        assert data[:5] == b"%PDF-" and data.rstrip().endswith(b"%%EOF")
    else:
        texts = svg_texts(out)
        assert "epoch" in texts and "loss" in texts and "accuracy" in texts


def test_two_runs_are_overlaid_with_their_names(runs, tmp_path, nncli):
    out = tmp_path / "both.svg"
    result = nncli("plot", runs / "alpha", runs / "beta", "-o", out)
    assert result.exit_code == 0, result.output
    texts = svg_texts(out)
    for name in ("alpha", "beta"):
        for split in ("train", "val"):
            # one legend entry per run and split, in each of the two panels
            assert texts.count(f"{name} {split}") == 2, texts


def test_runs_sharing_a_name_are_told_apart_by_folder(runs, tmp_path, nncli):
    out = tmp_path / "same.svg"
    result = nncli("plot", runs / "a", runs / "b" / "metrics.csv", "-o", out)
    assert result.exit_code == 0, result.output
    texts = svg_texts(out)
    assert "spiral (a) train" in texts and "spiral (b) val" in texts


def test_a_chosen_metric(runs, tmp_path, nncli):
    out = tmp_path / "lr.svg"
    result = nncli("plot", runs / "alpha", runs / "beta", "--metric", "lr", "-o", out)
    assert result.exit_code == 0, result.output
    texts = svg_texts(out)
    assert "lr" in texts and "alpha lr" in texts and "beta lr" in texts
    assert "accuracy" not in texts

    result = nncli("plot", runs / "alpha", "--metric", "accuracy", "-o", tmp_path / "acc.svg")
    assert result.exit_code == 0, result.output
    assert "accuracy" in svg_texts(tmp_path / "acc.svg") and "loss" not in svg_texts(tmp_path / "acc.svg")


def test_the_default_output_is_curves_png_here(runs, workdir, nncli):
    result = nncli("plot", runs / "alpha")
    assert result.exit_code == 0, result.output
    assert (workdir / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alpha", "-o", "x.jpg"], "use .png, .svg or .pdf"),
        (["alpha", "-o", "x"], "cannot tell the image format from no extension"),
        (["alpha", "--metric", "val_los"], "unknown metric 'val_los' (did you mean \"val_loss\"?)"),
        (["nowhere"], "does not exist"),
        (["."], "has no metrics.csv"),
    ],
)
def test_mistakes_are_one_line(runs, tmp_path, monkeypatch, args, message, nncli):
    monkeypatch.chdir(runs)
    result = nncli("plot", *args)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (runs / "x.jpg").exists() and not (runs / "x").exists()


def test_a_run_whose_config_is_too_large_to_read_is_named_by_its_folder(runs, tmp_path, nncli):
    """A config.yaml past the size any config may have (damaged or crafted) is not read whole:
    the run is labelled by its folder, as where the config is missing."""
    import shutil

    copy = tmp_path / "copied"
    shutil.copytree(runs / "alpha", copy)
    (copy / "config.yaml").write_text("name: huge\nseed: 3\n#" + "x" * (1 << 20) + "\n")
    out = tmp_path / "large.svg"
    result = nncli("plot", runs / "beta", copy, "-o", out)
    assert result.exit_code == 0, result.output
    texts = svg_texts(out)
    assert "copied train" in texts and "beta train" in texts
    assert not any("huge" in text for text in texts)
