"""Dataset downloads against a local stand-in server: verified content, resumed transfers, clear failures,
and uploads of the verified folders to S3 (the loopback server)."""

import functools
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from srfp import download as downloads
from srfp import grid as cli
from srfp.datasets import validation_images
from srfp.download import ARCHIVES, VERIFIED, Archive, DownloadError, download, download_archive, fetch, folder_digest, upload_archive
from srfp.gridspec import DataSettings, TrainingSource
from srfp.images import encode_png
from srfp.storage import Storage


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


def test_an_s3_destination_gets_each_verified_folder_then_its_marker_and_a_rerun_skips_it(
        server, tmp_path, s3_bucket, boto3_client, monkeypatch, capsys):
    served, url = server
    archive = _stand_in_archive(served, tmp_path)
    monkeypatch.setattr(downloads, "ARCHIVES", (archive,))
    assert cli.main(["data", "download", "--dest", f"s3://{s3_bucket}/data", "--mirror", url, "--only", "div2k"]) == 0
    objects = [o for o in boto3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]
               if not o["Key"].endswith("/")]  # pyarrow's empty folder markers
    assert {o["Key"] for o in objects} == {f"data/DIV2K/DIV2K_valid_HR/{name}" for name in
                                           ("0801.png", "0802.png", "0803.png", VERIFIED)}
    marker = boto3_client.get_object(Bucket=s3_bucket, Key=f"data/DIV2K/DIV2K_valid_HR/{VERIFIED}")
    assert marker["Body"].read().decode() == archive.digest
    assert max(o["LastModified"] for o in objects) == marker["LastModified"]
    data = DataSettings(div2k=TrainingSource(f"s3://{s3_bucket}/data/DIV2K", "div2k"),
                        flickr2k=TrainingSource(str(tmp_path), "flickr2k"), validation_images=3)
    assert validation_images(data).read(2)[0, 0, 0] == 2  # what training reads

    (served / "DIV2K_valid_HR.zip").unlink()  # a rerun downloads nothing
    capsys.readouterr()
    assert cli.main(["data", "download", "--dest", f"s3://{s3_bucket}/data", "--mirror", url, "--only", "div2k"]) == 0
    assert f"s3://{s3_bucket}/data/DIV2K/DIV2K_valid_HR: already uploaded and verified" in capsys.readouterr().out


def test_an_interrupted_upload_resumes_without_sending_uploaded_files_again(server, tmp_path, s3_bucket, monkeypatch):
    served, url = server
    archive = _stand_in_archive(served, tmp_path)
    remote, staging = Storage(f"s3://{s3_bucket}/data"), tmp_path / "staging"
    written, write = [], Storage.write_bytes

    def cut_after_one_file(storage, relative, data):
        if written:
            raise ConnectionError("connection lost")
        written.append(relative)
        write(storage, relative, data)

    monkeypatch.setattr(Storage, "write_bytes", cut_after_one_file)
    with pytest.raises(ConnectionError):
        upload_archive(archive, remote, staging, mirror=url, log=lambda *_: None)
    assert not remote.exists(f"{archive.folder}/{VERIFIED}")
    monkeypatch.setattr(Storage, "write_bytes", lambda storage, relative, data: (written.append(relative),
                                                                                 write(storage, relative, data)))
    (served / "DIV2K_valid_HR.zip").unlink()  # the staging folder keeps the verified download
    upload_archive(archive, remote, staging, mirror=url, log=lambda *_: None)
    first, *resumed, last = written
    assert sorted(resumed) == sorted({f"{archive.folder}/{n}" for n in ("0801.png", "0802.png", "0803.png")} - {first})
    assert last == f"{archive.folder}/{VERIFIED}"
    assert remote.read_text(f"{archive.folder}/{VERIFIED}") == archive.digest


def test_files_on_s3_that_are_not_in_the_release_are_refused(server, tmp_path, s3_bucket):
    served, url = server
    archive = _stand_in_archive(served, tmp_path)
    remote = Storage(f"s3://{s3_bucket}/data")
    remote.write_bytes(f"{archive.folder}/extra/0001.png", b"not from the release")
    with pytest.raises(DownloadError, match="holds 1 files that are not in the release, e.g. .*extra/0001.png"):
        upload_archive(archive, remote, tmp_path / "staging", mirror=url, log=lambda *_: None)
    assert not remote.exists(f"{archive.folder}/{VERIFIED}")


def test_staging_is_only_for_an_s3_destination(tmp_path):
    with pytest.raises(DownloadError, match="--staging is for an s3:// destination"):
        download(["div2k"], tmp_path, staging=str(tmp_path / "staging"), log=lambda *_: None)
