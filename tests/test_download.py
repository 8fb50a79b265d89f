"""download() and fetch_archive() against a real HTTP server on 127.0.0.1 that counts requests."""
import hashlib
import http.server
import io
import threading
import zipfile

import pytest

import lib.download
from lib.cli import UserError
from lib.download import download, fetch_archive

FILES = {"Toy/train.tsv": "sentence\tlabel\nfine \t1\n", "Toy/dev.tsv": "sentence\tlabel\nbad\t0\n"}
EXPECT = ["glue/Toy/train.tsv", "glue/Toy/dev.tsv"]


def make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in FILES.items():
            z.writestr(name, text)
    return buf.getvalue()


PAYLOAD, NOT_A_ZIP = make_zip(), b"not a zip at all"
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    hits: dict

    def do_GET(self):
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        body = {"/toy.zip": PAYLOAD, "/cut.zip": PAYLOAD, "/notzip.zip": NOT_A_ZIP}.get(self.path)
        if self.path == "/busy.zip":
            return self.send_error(503)
        if body is None:
            return self.send_error(404)
        self.send_response(200)
        # /cut.zip promises more bytes than it sends, then hangs up: an interrupted transfer.
        promised = len(body) + (1000 if self.path == "/cut.zip" else 0)
        self.send_header("Content-Length", str(promised))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2] if self.path == "/cut.zip" else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base url, request counts per path); DATA_DIR is tmp_path and retries do not sleep."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(lib.download, "RETRY_BACKOFF", 0.0)
    hits = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (Handler,), {"hits": hits}))
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", hits
    httpd.shutdown()
    httpd.server_close()


def test_fetch_archive_downloads_extracts_then_never_asks_again(server, tmp_path):
    url, hits = server
    assert fetch_archive(url + "/toy.zip", "toy.zip", SHA256, EXPECT) == tmp_path
    assert (tmp_path / "glue/Toy/train.tsv").read_text() == FILES["Toy/train.tsv"]
    assert (tmp_path / "downloads/toy.zip").read_bytes() == PAYLOAD and hits == {"/toy.zip": 1}
    fetch_archive(url + "/toy.zip", "toy.zip", SHA256, EXPECT)
    assert hits == {"/toy.zip": 1}
    (tmp_path / "glue/Toy/dev.tsv").unlink()  # re-extracted from the cached zip, still no request
    fetch_archive(url + "/toy.zip", "toy.zip", SHA256, EXPECT)
    assert (tmp_path / "glue/Toy/dev.tsv").exists() and hits == {"/toy.zip": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads", "glue"]  # no temp folder


@pytest.mark.faults
def test_wrong_checksum_is_rejected_once_and_leaves_nothing(server, tmp_path):
    url, hits = server
    with pytest.raises(UserError, match="sha256 mismatch"):
        fetch_archive(url + "/toy.zip", "toy.zip", "0" * 64, EXPECT)
    assert hits == {"/toy.zip": 1}  # a checksum mismatch is not retried
    assert not list((tmp_path / "downloads").iterdir()) and not (tmp_path / "glue").exists()


@pytest.mark.faults
def test_404_is_one_clear_line_naming_url_and_path(server, tmp_path):
    url, hits = server
    with pytest.raises(UserError) as e:
        download(url + "/gone.zip", tmp_path / "downloads/gone.zip", sha256="ab" * 32)
    msg = str(e.value)
    assert "\n" not in msg and hits == {"/gone.zip": 1}
    assert f"could not download {url}/gone.zip (HTTP 404)" in msg
    assert f"place the file by hand at {tmp_path / 'downloads/gone.zip'}" in msg
    assert "ab" * 32 in msg


@pytest.mark.faults
def test_interrupted_download_leaves_no_file_and_no_part(server, tmp_path):
    url, hits = server
    dest = tmp_path / "downloads/cut.zip"
    with pytest.raises(UserError, match="could not download"):
        download(url + "/cut.zip", dest, retries=3)
    assert hits == {"/cut.zip": 3}  # a cut connection is worth retrying
    assert not dest.exists() and not dest.with_suffix(".zip.part").exists()


@pytest.mark.faults
def test_server_errors_are_retried(server, tmp_path):
    url, hits = server
    with pytest.raises(UserError, match=r"\(HTTP 503\)"):
        download(url + "/busy.zip", tmp_path / "busy.zip", retries=2)
    assert hits == {"/busy.zip": 2}


def test_existing_good_file_is_used_without_any_request(server, tmp_path):
    url, hits = server
    (tmp_path / "toy.zip").write_bytes(PAYLOAD)
    assert download(url + "/toy.zip", tmp_path / "toy.zip", SHA256) == tmp_path / "toy.zip"
    assert hits == {}


@pytest.mark.faults
def test_corrupt_zip_says_which_file_to_delete(server, tmp_path):
    url, _ = server
    sha = hashlib.sha256(NOT_A_ZIP).hexdigest()
    with pytest.raises(UserError, match=r"notzip\.zip is not a readable zip .*delete it and re-"):
        fetch_archive(url + "/notzip.zip", "notzip.zip", sha, EXPECT)
