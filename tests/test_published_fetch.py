"""``published fetch`` against a loopback server standing in for the official hosts: complete downloads, a
resumed transfer, a checksum failure, a rerun that downloads nothing, ``--only``, archives holding the file, the
message without internet, and the Google Drive and Dropbox addresses."""

import hashlib
import http.server
import io
import threading
import zipfile
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import gdown
import pytest
import torch

from srfp import grid as cli
from srfp.download import DownloadError
from srfp.published import Catalogue, PublishedEntry, WeightsFile
from srfp.published_fetch import _direct, fetch_weights

INGEST_STEPS = "git clone https://example.invalid/code\npython make_images.py"


@dataclass
class Served:
    """What the stand-in server serves, which responses stop halfway, and the requests it received."""

    files: dict = field(default_factory=dict)
    stop_halfway: set = field(default_factory=set)
    requests: list = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``Served.files``, honouring ``Range: bytes=N-``; a path in ``stop_halfway`` gets half of its body
    once, then the connection closes."""

    def __init__(self, served: Served, *args, **kwargs):
        self.served = served
        super().__init__(*args, **kwargs)

    def do_GET(self):
        path = urlparse(self.path).path
        self.served.requests.append((path, self.headers.get("Range")))
        if path not in self.served.files:
            self.send_error(404)
            return
        start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
        body = self.served.files[path][start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path in self.served.stop_halfway:
            self.served.stop_halfway.discard(path)
            body = body[:len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    served = Served()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Handler(served, *a))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def _weights_bytes(value: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    torch.save({"head.0.weight": torch.full((4, 3, 3, 3), value)}, buffer)
    return buffer.getvalue()


def _entry(name: str, url: str | None, file: str | None, sha256_prefix: str | None = None) -> PublishedEntry:
    return PublishedEntry(name=name, training_data=["DIV2K"], paper="Stand-in 2024", code="https://example.invalid",
                          scale=4, loss="L1", run="native", licence="MIT",
                          weights=[WeightsFile(url, file, sha256_prefix)], arch="EDSR", input_range=255)


def _ingest_entry(name: str) -> PublishedEntry:
    return PublishedEntry(name=name, training_data=["MSCOCO"], paper="Stand-in 2017", code="https://example.invalid",
                          scale=4, loss="adversarial", run="ingest", licence=None,
                          weights=[WeightsFile("https://example.invalid", "weights", None)], ingest=INGEST_STEPS)


def _catalogue(*entries) -> Catalogue:
    return Catalogue(models=list(entries), source="stand-in.yaml")


def test_a_file_is_downloaded_verified_by_loading_and_marked(server, tmp_path):
    served, url = server
    served.files["/m.pt"] = _weights_bytes()
    paths = fetch_weights(_catalogue(_entry("M", f"{url}/m.pt", "m.pt")), tmp_path, log=lambda *_: None)
    target = tmp_path / "M-NA-x4-M-NA-pretrained" / "m.pt"
    assert paths == [target] and target.read_bytes() == served.files["/m.pt"]
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert (target.parent / "m.pt.srfp-verified").read_text() == f"{digest}  m.pt\n"  # as sha256sum -c reads it


def test_an_interrupted_transfer_resumes_with_a_range_request(server, tmp_path):
    served, url = server
    served.files["/m.pt"] = payload = _weights_bytes()
    served.stop_halfway.add("/m.pt")
    catalogue = _catalogue(_entry("M", f"{url}/m.pt", "m.pt"))
    with pytest.raises(DownloadError, match="1 of 1 weight files are missing"):
        fetch_weights(catalogue, tmp_path, log=lambda *_: None)
    partial = tmp_path / "M-NA-x4-M-NA-pretrained" / "m.pt.part"
    assert partial.read_bytes() == payload[:len(payload) // 2]  # kept, not taken for the whole file
    fetch_weights(catalogue, tmp_path, log=lambda *_: None)
    assert served.requests[-1] == ("/m.pt", f"bytes={len(payload) // 2}-")
    assert (tmp_path / "M-NA-x4-M-NA-pretrained" / "m.pt").read_bytes() == payload


def test_a_file_whose_checksum_differs_is_removed_and_not_marked(server, tmp_path):
    served, url = server
    served.files["/m.pt"] = _weights_bytes()
    messages = []
    with pytest.raises(DownloadError, match="did not verify"):
        fetch_weights(_catalogue(_entry("M", f"{url}/m.pt", "m.pt", sha256_prefix="00000000")), tmp_path,
                      log=messages.append)
    assert any("does not start with the published 00000000; it was removed" in m for m in messages)
    assert not list((tmp_path / "M-NA-x4-M-NA-pretrained").iterdir())


def test_a_rerun_skips_verified_files(server, tmp_path):
    served, url = server
    digest = hashlib.sha256(payload := _weights_bytes()).hexdigest()
    served.files["/m.pt"] = payload
    catalogue = _catalogue(_entry("M", f"{url}/m.pt", "m.pt", sha256_prefix=digest[:8]))
    fetch_weights(catalogue, tmp_path, log=lambda *_: None)
    served.requests.clear()
    messages = []
    assert fetch_weights(catalogue, tmp_path, log=messages.append) == [tmp_path / "M-NA-x4-M-NA-pretrained" / "m.pt"]
    assert served.requests == []
    assert messages == ["M-NA-x4-M-NA-pretrained: m.pt already downloaded and verified"]


def test_files_are_taken_out_of_one_shared_archive(server, tmp_path):
    served, url = server
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("models/A.pt", _weights_bytes(1.0))
        archive.writestr("models/B.pt", _weights_bytes(2.0))
    served.files["/models.zip"] = bundle.getvalue()
    catalogue = _catalogue(_entry("A", f"{url}/models.zip", "A.pt"), _entry("B", f"{url}/models.zip", "B.pt"))
    fetch_weights(catalogue, tmp_path, log=lambda *_: None)
    assert served.requests == [("/models.zip", None)]  # one download for both
    assert (tmp_path / "B-NA-x4-B-NA-pretrained" / "B.pt").read_bytes() == _weights_bytes(2.0)
    assert not list((tmp_path / ".downloads").iterdir())


def test_only_fetches_one_model_and_names_the_valid_ones(server, tmp_path, monkeypatch, capsys):
    served, url = server
    served.files["/a.pt"] = served.files["/b.pt"] = _weights_bytes()
    catalogue = _catalogue(_entry("A", f"{url}/a.pt", "a.pt"), _entry("B", f"{url}/b.pt", "b.pt"))
    monkeypatch.setattr(cli, "load_catalogue", lambda: catalogue)
    assert cli.main(["published", "fetch", "--dest", str(tmp_path), "--only", "b"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["B-NA-x4-B-NA-pretrained"]
    assert cli.main(["published", "fetch", "--dest", str(tmp_path), "--only", "C"]) == 2
    assert "error: --only 'C' names no published model; valid values: A, B, or a model id" in capsys.readouterr().err


def test_without_internet_every_missing_file_says_where_it_comes_from_and_where_it_goes(tmp_path, monkeypatch, capsys):
    catalogue = _catalogue(_entry("A", "http://127.0.0.1:9/a.pt", "a.pt"),
                           _entry("B", "http://127.0.0.1:9/bundle.zip", "b.pt"),
                           _entry("S", "https://pan.baidu.com/s/1stand-in", "s.pt"),
                           _entry("R", None, None), _ingest_entry("E"))
    monkeypatch.setattr(cli, "load_catalogue", lambda: catalogue)
    assert cli.main(["published", "fetch", "--dest", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert (f"missing: A-NA-x4-A-NA-pretrained: a.pt comes from http://127.0.0.1:9/a.pt; put it at "
            f"{tmp_path}/A-NA-x4-A-NA-pretrained/a.pt") in out
    assert (f"missing: B-NA-x4-B-NA-pretrained: b.pt comes from http://127.0.0.1:9/bundle.zip, inside the archive "
            f"or folder there; put it at {tmp_path}/B-NA-x4-B-NA-pretrained/b.pt") in out
    assert "pan.baidu.com serves files to a browser only" in out
    assert f"put it at {tmp_path}/S-NA-x4-S-NA-pretrained/s.pt" in out
    assert "R-NA-x4-R-NA-pretrained: no official weights address is known (see stand-in.yaml); not fetched" in out
    assert "E-NA-x4-E-NA-pretrained: ingest only, nothing to fetch" in out and "    python make_images.py" in out
    assert err == "error: 3 of 3 weight files are missing or did not verify, each listed above with its address and " \
                  "path; put them there and rerun to verify them\n"


def test_a_file_put_in_place_by_hand_is_verified_without_a_download(tmp_path):
    target = tmp_path / "A-NA-x4-A-NA-pretrained" / "a.pt"
    target.parent.mkdir()
    target.write_bytes(_weights_bytes())
    catalogue = _catalogue(_entry("A", "http://127.0.0.1:9/a.pt", "a.pt"))
    assert fetch_weights(catalogue, tmp_path, log=lambda *_: None) == [target]
    assert (target.parent / "a.pt.srfp-verified").is_file()


def test_google_drive_files_and_folders_go_through_gdown(tmp_path, monkeypatch):
    calls = []

    def download(**arguments):
        calls.append(("download", arguments))
        if arguments["id"] == "ZIPID":  # the file address names an archive holding the weights
            with zipfile.ZipFile(arguments["output"], "w") as archive:
                archive.writestr("x/a.pt", _weights_bytes())
        else:
            Path(arguments["output"]).write_bytes(_weights_bytes())

    Listed = namedtuple("Listed", "id path local_path")  # gdown's GoogleDriveFileToDownload

    def download_folder(**arguments):
        calls.append(("download_folder", arguments))
        return [Listed("OTHERID", "other.pth", "unused"), Listed("FILEID", "b.pth", "unused")]

    monkeypatch.setattr(gdown, "download", download)
    monkeypatch.setattr(gdown, "download_folder", download_folder)
    catalogue = _catalogue(_entry("A", "https://drive.google.com/file/d/ZIPID/view", "a.pt"),
                           _entry("B", "https://drive.google.com/drive/u/0/folders/FOLDERID", "b.pth"))
    fetch_weights(catalogue, tmp_path, log=lambda *_: None)
    b_folder = tmp_path / "B-NA-x4-B-NA-pretrained"
    assert calls == [
        ("download", dict(id="ZIPID", output=str(tmp_path / ".downloads" / "ZIPID"), quiet=False, resume=True)),
        ("download_folder", dict(id="FOLDERID", output=str(b_folder), quiet=True, skip_download=True)),
        ("download", dict(id="FILEID", output=str(b_folder / "b.pth"), quiet=False, resume=True))]
    assert (tmp_path / "A-NA-x4-A-NA-pretrained" / "a.pt.srfp-verified").is_file()
    assert (b_folder / "b.pth.srfp-verified").is_file()


def test_dropbox_share_pages_become_direct_downloads():
    assert _direct("https://www.dropbox.com/s/abc/models.zip?dl=0") == "https://www.dropbox.com/s/abc/models.zip?dl=1"
    assert _direct("https://github.com/o/r/releases/download/v1/m.pt") == "https://github.com/o/r/releases/download/v1/m.pt"
