"""The downloader, end to end against an HTTP server on 127.0.0.1. No test reaches the internet."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from nncli.data import DATASETS, download, resolve_data_dir
from nncli.data.download import RemoteFile, ensure_files, mirrors_for
from nncli.data.idx import write_idx
from nncli.data.mnist import FASHION_FILES, MNIST_FILES
from nncli.errors import DataError

CONTENT = bytes(range(256)) * 1000
PACKED = gzip.compress(CONTENT, compresslevel=9)
PLAIN = RemoteFile("blob.bin", hashlib.sha256(CONTENT).hexdigest())
GZIPPED = RemoteFile("blob.bin.gz", hashlib.sha256(CONTENT).hexdigest(), digest_of_gunzipped=True)


class Server:
    """Serves `routes`: path -> bytes, an HTTP status, or ("short", body) for a body cut short."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path, 404)
                if isinstance(route, int):
                    self.send_error(route)
                    return
                short = isinstance(route, tuple)
                body = route[1] if short else route
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # A short transfer: half the promised bytes, then the connection closes.
                self.wfile.write(body[: len(body) // 2] if short else body)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, folder: str) -> str:
        return f"{self.base}/{folder}/"


@pytest.fixture(scope="module")
def running_server():
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def server(running_server):
    running_server.routes.clear()
    running_server.requests.clear()
    return running_server


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def listing(folder: Path) -> list[str]:
    """Everything in `folder`, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_and_checks_the_digest(server, tmp_path):
    server.routes["/a/blob.bin"] = CONTENT
    [path] = ensure_files("blobs", [PLAIN], tmp_path / "blobs", [server.url("a")])
    assert path == tmp_path / "blobs" / "blob.bin"
    assert path.read_bytes() == CONTENT
    assert listing(tmp_path / "blobs") == ["blob.bin"]


def test_the_digest_of_a_gzipped_file_is_of_its_content(server, tmp_path):
    # A mirror may compress differently: the digest of the decompressed bytes still matches.
    server.routes["/a/blob.bin.gz"] = gzip.compress(CONTENT, compresslevel=1)
    [path] = ensure_files("blobs", [GZIPPED], tmp_path, [server.url("a")])
    assert gzip.decompress(path.read_bytes()) == CONTENT


def test_a_failing_mirror_then_a_good_one(server, tmp_path):
    server.routes["/bad/blob.bin.gz"] = 500
    server.routes["/good/blob.bin.gz"] = PACKED
    [path] = ensure_files("blobs", [GZIPPED], tmp_path, [server.url("bad"), server.url("good")])
    assert server.requests == ["/bad/blob.bin.gz", "/good/blob.bin.gz"]
    assert path.read_bytes() == PACKED
    assert listing(tmp_path) == ["blob.bin.gz"]


def test_an_unreachable_mirror_then_a_good_one(server, closed_port_url, tmp_path):
    server.routes["/good/blob.bin"] = CONTENT
    [path] = ensure_files("blobs", [PLAIN], tmp_path, [closed_port_url, server.url("good")])
    assert path.read_bytes() == CONTENT


def test_checksum_mismatch_is_rejected_and_nothing_is_left(server, tmp_path):
    server.routes["/a/blob.bin.gz"] = gzip.compress(CONTENT[:-1] + b"\x00")
    with pytest.raises(DataError, match="SHA-256 of the decompressed content is [0-9a-f]{64}"):
        ensure_files("blobs", [GZIPPED], tmp_path / "blobs", [server.url("a")])
    assert listing(tmp_path / "blobs") == []


def test_checksum_mismatch_falls_back_to_the_next_mirror(server, tmp_path):
    server.routes["/tampered/blob.bin"] = CONTENT[::-1]
    server.routes["/good/blob.bin"] = CONTENT
    [path] = ensure_files("blobs", [PLAIN], tmp_path, [server.url("tampered"), server.url("good")])
    assert path.read_bytes() == CONTENT
    assert listing(tmp_path) == ["blob.bin"]


def test_interrupted_transfer_leaves_nothing_and_falls_back(server, tmp_path):
    server.routes["/cut/blob.bin.gz"] = ("short", PACKED)
    server.routes["/good/blob.bin.gz"] = PACKED
    with pytest.raises(DataError, match=r"transfer ended after [\d,]+ of [\d,]+ bytes"):
        ensure_files("blobs", [GZIPPED], tmp_path / "one", [server.url("cut")])
    assert listing(tmp_path / "one") == []
    mirrors = [server.url("cut"), server.url("good")]
    [path] = ensure_files("blobs", [GZIPPED], tmp_path / "two", mirrors)
    assert path.read_bytes() == PACKED
    assert listing(tmp_path / "two") == ["blob.bin.gz"]


def test_gzip_cut_short_with_a_matching_length_is_rejected(server, tmp_path):
    server.routes["/a/blob.bin.gz"] = PACKED[: len(PACKED) // 2]
    with pytest.raises(DataError, match="gzip data ends before its end marker"):
        ensure_files("blobs", [GZIPPED], tmp_path, [server.url("a")])
    assert listing(tmp_path) == []


def test_ctrl_c_mid_download_leaves_nothing(monkeypatch, tmp_path):
    class Response:
        headers = {"Content-Length": str(len(CONTENT))}
        reads = 0

        def read(self, n):
            self.reads += 1
            if self.reads > 2:
                raise KeyboardInterrupt
            return CONTENT[:n]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(download, "_open", lambda url: Response())
    with pytest.raises(KeyboardInterrupt):
        ensure_files("blobs", [PLAIN], tmp_path, ["http://127.0.0.1:9/"])
    assert listing(tmp_path) == []


def test_files_already_present_are_used_without_network(server, tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"whatever the user put there")
    [path] = ensure_files("blobs", [PLAIN], tmp_path, [server.url("a")])
    assert path == tmp_path / "blob.bin"
    assert server.requests == []


@pytest.mark.parametrize("gunzipped_digest", [True, False])
def test_a_decompressed_copy_stands_in_for_the_gz(server, tmp_path, gunzipped_digest):
    (tmp_path / "blob.bin").write_bytes(CONTENT)
    remote = RemoteFile("blob.bin.gz", "0" * 64, gunzipped_digest)
    [path] = ensure_files("blobs", [remote], tmp_path, [server.url("a")])
    assert path == tmp_path / "blob.bin"
    assert server.requests == []


def test_offline_error_says_what_is_expected_where_and_how_to_provide_it(closed_port_url, tmp_path):
    folder = tmp_path / "mnist"
    with pytest.raises(DataError) as info:
        ensure_files("mnist", MNIST_FILES, folder, [closed_port_url])
    message = str(info.value)
    for remote in MNIST_FILES:
        assert remote.name in message
    assert str(folder) in message
    assert "--data-dir" in message and "NNCLI_DATA_DIR" in message
    assert listing(folder) == []


def test_mirrors_come_from_the_argument_then_the_environment_then_the_defaults(monkeypatch):
    defaults = ["https://example.org/{dataset}/"]
    monkeypatch.delenv("NNCLI_MIRRORS", raising=False)
    assert mirrors_for("mnist", defaults) == ["https://example.org/mnist/"]
    monkeypatch.setenv("NNCLI_MIRRORS", "http://a/{dataset}/, http://b/")
    assert mirrors_for("mnist", defaults) == ["http://a/mnist/", "http://b/"]
    assert mirrors_for("mnist", defaults, ["http://c/"]) == ["http://c/"]


def test_mnist_loader_downloads_through_nncli_mirrors(server, monkeypatch, tmp_path):
    # Tiny IDX files under the real names, with digests patched to match them.
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(20, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(5, dtype=np.uint8),
    }
    files = []
    for name, array in arrays.items():
        write_idx(tmp_path / name, array)
        packed = (tmp_path / name).read_bytes()
        server.routes[f"/mirror/mnist/{name}"] = packed
        digest = hashlib.sha256(gzip.decompress(packed)).hexdigest()
        files.append(RemoteFile(name, digest, digest_of_gunzipped=True))
    monkeypatch.setattr("nncli.data.mnist.MNIST_FILES", tuple(files))
    monkeypatch.setenv("NNCLI_MIRRORS", server.base + "/mirror/{dataset}/")

    data = DATASETS.get("mnist")(data_dir=tmp_path / "cache", rng=rng)
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_test.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(data.x_train[:, 0], arrays["train-images-idx3-ubyte.gz"])
    assert data.y_train.dtype == np.int64
    assert listing(tmp_path / "cache" / "mnist") == sorted(arrays)


def test_resolve_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("NNCLI_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(str(tmp_path / "cli")) == tmp_path / "cli"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("NNCLI_DATA_DIR")
    assert resolve_data_dir(None) == tmp_path / "xdg" / "nncli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir(None) == Path.home() / ".cache" / "nncli"


@pytest.mark.parametrize("folder, files", [("mnist", MNIST_FILES), ("fashion_mnist", FASHION_FILES)])
def test_every_pinned_digest_matches_the_published_files(server, tmp_path, shared_data_dir, folder, files):
    """The real files, served from a mirror on 127.0.0.1, pass the downloader's own checks: a
    wrong digest in the source would make every real download of them fail."""
    source = shared_data_dir / folder
    missing = [f.name for f in files if not (source / f.name).is_file()]
    if missing:
        pytest.skip(f"the published {folder} files are not in {source} (missing {', '.join(missing)});"
                    " set NNCLI_DATA_DIR to a folder holding them")
    for remote in files:
        server.routes[f"/{folder}/{remote.name}"] = (source / remote.name).read_bytes()
    paths = ensure_files(folder, files, tmp_path / folder, [server.url(folder)])
    assert [p.name for p in paths] == [f.name for f in files]
    assert len(server.requests) == len(files)
    for remote, path in zip(files, paths, strict=True):
        assert path.read_bytes() == (source / remote.name).read_bytes()


@pytest.mark.parametrize("progress", [True, False])
def test_the_progress_argument_decides_the_bar_on_a_terminal(monkeypatch, progress):
    from nncli.data import download

    monkeypatch.setattr(download.sys.stderr, "isatty", lambda: True)
    bar = download._progress_bar(10, "blob.bin", progress)
    try:
        assert bar.disable is not progress
    finally:
        bar.close()
