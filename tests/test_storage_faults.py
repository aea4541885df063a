"""Storage faults are named as storage faults: a root that cannot be read or written stops every command before
any work, with one `error:` line naming the root and the cause (exit status 2), never as bad photos."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import S3_KEYS, _free_port
from srfp.grid import main
from srfp.gridspec import load_grid
from srfp.photos import build_photos
from srfp.storage import Storage, StorageError


def _fails_before_any_work(capsys, arguments: list[str], message: str) -> None:
    assert main(arguments) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"error: {message}"]
    assert captured.out == ""  # no photo built, none skipped, no status printed


def test_a_root_on_a_file_stops_every_command(tmp_path, capsys):
    root = tmp_path / "not-a-folder"
    root.write_text("x")
    for command in ("photos", "status", "train", "report"):
        _fails_before_any_work(capsys, [command, "--root", str(root)],
                               f"cannot read the storage root {root}: it is a file, not a folder")


def test_a_read_only_folder_stops_a_command_that_writes(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    # root ignores permission bits: it runs the command without the capability that lets it (Linux's setpriv)
    unprivileged = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    if unprivileged and not shutil.which("setpriv"):
        pytest.skip("running as root, and setpriv is absent")
    result = subprocess.run([*unprivileged, sys.executable, "-m", "srfp.grid", "photos", "--root", str(folder / "run")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: cannot write the storage root {folder / 'run'}: Permission denied"]
    assert result.stdout == ""


def test_a_missing_bucket_stops_every_command(s3_server, monkeypatch, capsys):
    for key, value in {**S3_KEYS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    for command in ("photos", "status"):
        _fails_before_any_work(capsys, [command, "--root", "s3://no-such-bucket/run"],
                               "cannot read the storage root s3://no-such-bucket/run: the bucket does not exist at "
                               f"{s3_server}; create it, or check the name and AWS_ENDPOINT_URL")


def _free_port_holding_403() -> int:
    """A free port whose number holds 403 (40300-40399), as one of CI's random ports did."""
    for port in range(40300, 40400):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port from 40300 to 40399")


@pytest.mark.parametrize("port", [_free_port, _free_port_holding_403])
def test_an_unreachable_endpoint_stops_every_command_within_seconds(monkeypatch, capsys, port):
    endpoint = f"http://127.0.0.1:{port()}"  # nothing listens there (a port holding 403 is no HTTP 403)
    for key, value in {**S3_KEYS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    for command in ("photos", "status"):
        started = time.monotonic()
        _fails_before_any_work(capsys, [command, "--root", "s3://bucket/run"],
                               f"cannot read the storage root s3://bucket/run: cannot reach the S3 endpoint {endpoint}; "
                               "check AWS_ENDPOINT_URL and the network")
        assert time.monotonic() - started < 20


def test_an_error_writing_the_root_stops_the_build_instead_of_skipping_photos(tmp_path, monkeypatch):
    storage, messages = Storage(tmp_path / "run"), []

    def disk_full(relative, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        build_photos(load_grid("smoke").photos, storage, log=messages.append)
    assert not [message for message in messages if message.startswith("skipped")]


def test_a_bucket_that_disappears_during_a_run_is_named_on_the_first_write(s3_server, monkeypatch):
    for key, value in {**S3_KEYS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(StorageError, match="^cannot write s3://no-such-bucket/run/models/a.json: the bucket does "
                                           "not exist at http://127.0.0.1:"):
        Storage("s3://no-such-bucket/run").write_text("models/a.json", "{}")
