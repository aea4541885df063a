"""Dataset downloads against a local stand-in server: verified content, resumed transfers, clear failures."""

import functools
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from srfp.download import ARCHIVES, Archive, DownloadError, download, download_archive, fetch, folder_digest
from srfp.images import encode_png


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, honouring ``Range: bytes=N-`` as the official servers do."""

    def send_head(self):
        path = Path(self.translate_path(self.path))
        start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
        if not path.is_file():
            self.send_error(404)
            return None
        data = path.read_bytes()
        if start and start >= len(data):
            self.send_error(416)
            return None
        data = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return None

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=served))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def _stand_in_archive(served: Path, tmp_path: Path) -> Archive:
    images = tmp_path / "images" / "DIV2K_valid_HR"
    images.mkdir(parents=True)
    for i in range(3):
        (images / f"{801 + i:04d}.png").write_bytes(encode_png(np.full((4, 4, 3), i, np.uint8)))
    with zipfile.ZipFile(served / "DIV2K_valid_HR.zip", "w") as bundle:
        for path in sorted(images.iterdir()):
            bundle.write(path, f"DIV2K_valid_HR/{path.name}")
    return Archive("div2k", "http://official.invalid/DIV2K_valid_HR.zip", "DIV2K/DIV2K_valid_HR", 3,
                   folder_digest(images))


def test_download_fetches_unpacks_and_verifies(server, tmp_path):
    served, url = server
    archive = _stand_in_archive(served, tmp_path)
    folder = download_archive(archive, tmp_path / "data", mirror=url, log=lambda *_: None)
    assert sorted(p.name for p in folder.glob("*.png")) == ["0801.png", "0802.png", "0803.png"]
    assert not (tmp_path / "data" / "DIV2K" / "DIV2K_valid_HR.zip").exists()
    messages = []
    download_archive(archive, tmp_path / "data", mirror=url, log=messages.append)
    assert messages == ["DIV2K/DIV2K_valid_HR: already downloaded and verified"]


def test_an_interrupted_download_resumes_where_it_stopped(server, tmp_path):
    served, url = server
    payload = bytes(range(256)) * 1000
    (served / "big.bin").write_bytes(payload)
    target = tmp_path / "big.bin"
    target.with_name("big.bin.part").write_bytes(payload[:1000])
    fetch(f"{url}/big.bin", target, log=lambda *_: None)
    assert target.read_bytes() == payload


def test_a_part_file_that_is_already_whole_completes(server, tmp_path):
    served, url = server
    payload = b"whole" * 100
    (served / "done.bin").write_bytes(payload)
    target = tmp_path / "done.bin"
    target.with_name("done.bin.part").write_bytes(payload)  # killed after the last byte, before the rename
    fetch(f"{url}/done.bin", target, log=lambda *_: None)
    assert target.read_bytes() == payload


def test_content_that_does_not_match_the_published_digest_is_refused(server, tmp_path):
    served, url = server
    archive = _stand_in_archive(served, tmp_path)
    tampered = Archive(archive.dataset, archive.url, archive.folder, archive.files, "0" * 32)
    with pytest.raises(DownloadError, match="differs from the published 0000"):
        download_archive(tampered, tmp_path / "data", mirror=url, log=lambda *_: None)
    assert not (tmp_path / "data" / "DIV2K" / "DIV2K_valid_HR" / ".srfp-verified").exists()


def test_an_unreachable_server_says_how_to_provide_the_file(tmp_path):
    archive = ARCHIVES[1]
    with pytest.raises(DownloadError, match="put it at .*DIV2K_valid_HR.zip"):
        download_archive(archive, tmp_path, mirror="http://127.0.0.1:9", log=lambda *_: None)


def test_official_addresses_and_unknown_datasets():
    assert {a.url for a in ARCHIVES if a.dataset == "div2k"} == {
        "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
        "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip"}
    with pytest.raises(DownloadError, match="valid values: div2k, flickr2k"):
        download(["div3k"], Path("/tmp"), log=lambda *_: None)
