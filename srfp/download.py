"""Download DIV2K and Flickr2K from their official addresses and verify what they unpack to.

Each archive unpacks to one folder of PNGs whose content is checked against a published digest:
the MD5 of the concatenated hexadecimal MD5s of its files in name order (the digests deepinv
publishes for these datasets). Downloads resume from a ``.part`` file; a verified folder is marked
and skipped on a rerun; ``--mirror`` fetches the same file names from another base address.

An ``s3://bucket/prefix`` destination is filled through a local staging folder: each archive is
downloaded and verified there, then its folder is uploaded with its marker last, so a marker on S3
vouches for the whole folder and a rerun skips it.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from srfp.errors import UserError
from srfp.storage import Storage, is_remote


class DownloadError(UserError, RuntimeError):
    """A download that failed or did not verify; the message says what to do."""


@dataclass(frozen=True)
class Archive:
    """One archive of a dataset: where to get it, the folder it unpacks to under ``dest``, its digest."""

    dataset: str
    url: str
    folder: str
    files: int
    digest: str

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def url_from(self, mirror: str | None) -> str:
        return f"{mirror.rstrip('/')}/{self.file_name}" if mirror else self.url


ARCHIVES = (
    Archive("div2k", "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip", "DIV2K/DIV2K_train_HR", 800,
            "f9de9c251af455c1021017e61713a48b"),
    Archive("div2k", "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip", "DIV2K/DIV2K_valid_HR", 100,
            "542325e500b0a474c7ad18bae922da72"),
    # The HR images of https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar (EDSR's authors), as one zip.
    Archive("flickr2k", "https://huggingface.co/datasets/goodfellowliu/Flickr2K/resolve/main/Flickr2K.zip",
            "Flickr2K", 2650, "21fc3b64443fba44d6f0ad8a8c171b1e"),
)
DATASETS = tuple(dict.fromkeys(a.dataset for a in ARCHIVES))
VERIFIED = ".srfp-verified"


def folder_digest(folder: Path) -> str:
    """MD5 over the hexadecimal MD5 of each file directly in ``folder``, in name order."""
    outer = hashlib.md5()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != VERIFIED):
        inner = hashlib.md5()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                inner.update(chunk)
        outer.update(inner.hexdigest().encode())
    return outer.hexdigest()


def fetch(url: str, target: Path, log=print, chunk: int = 1 << 20) -> None:
    """Download ``url`` to ``target``, resuming a partial ``target.part`` with an HTTP range request."""
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        _stream(request, partial, have, target.name, log, chunk)
    except urllib.error.HTTPError as error:
        if not (error.code == 416 and have):  # 416 on a resume: the part file is already whole
            raise DownloadError(f"cannot download {url}: {error}") from None
    except (OSError, http.client.HTTPException) as error:
        raise DownloadError(f"cannot download {url}: {error}. Rerun to resume, or fetch the file yourself "
                            f"and put it at {target}") from None
    partial.replace(target)


def _stream(request, partial: Path, have: int, name: str, log, chunk: int) -> None:
    """Append the response to ``partial`` (or start it anew when the server ignores the range)."""
    with urllib.request.urlopen(request, timeout=60) as response:
        if have and response.status != 206:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length or 0)
        with open(partial, "ab" if have else "wb") as out:
            done, last = have, 0.0
            while block := response.read(chunk):
                out.write(block)
                done += len(block)
                if time.monotonic() - last > 5:
                    last = time.monotonic()
                    log(f"  {name}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")
        if length and done < total:  # the connection closed early: keep the part file for a resume
            raise http.client.IncompleteRead(b"", total - done)


def unpack(archive_path: Path, dest: Path) -> None:
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as bundle:
            bundle.extractall(dest)
    else:
        with tarfile.open(archive_path) as bundle:
            bundle.extractall(dest, filter="data")


def download_archive(archive: Archive, dest: Path, mirror: str | None = None, keep_archive: bool = False,
                     log=print) -> Path:
    """Fetch, unpack and verify one archive under ``dest``; returns the verified folder."""
    folder = dest / archive.folder
    marker = folder / VERIFIED
    if marker.exists() and marker.read_text().strip() == archive.digest:
        log(f"{archive.folder}: already downloaded and verified")
        return folder
    unpack_into = dest / Path(archive.folder).parent
    unpack_into.mkdir(parents=True, exist_ok=True)
    archive_path = unpack_into / archive.file_name
    if not archive_path.exists():
        log(f"downloading {archive.url_from(mirror)}")
        fetch(archive.url_from(mirror), archive_path, log)
    log(f"unpacking {archive_path.name}")
    try:
        unpack(archive_path, unpack_into)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        archive_path.unlink()
        raise DownloadError(f"{archive_path} is not a complete archive ({error}); it was removed, rerun to fetch it again") from None
    if not folder.is_dir():
        raise DownloadError(f"{archive_path.name} did not unpack to {folder}; is it the right file?")
    digest = folder_digest(folder)
    if digest != archive.digest:
        raise DownloadError(f"{folder}: content digest {digest} differs from the published {archive.digest}; "
                            f"the download is corrupt or not the official release. Delete {folder} and "
                            f"{archive_path} and rerun")
    marker.write_text(archive.digest)
    if not keep_archive:
        archive_path.unlink()
    log(f"{archive.folder}: {archive.files} images verified")
    return folder


def upload_archive(archive: Archive, remote: Storage, staging: Path, mirror: str | None = None,
                   keep_archive: bool = False, log=print) -> str:
    """Download and verify one archive in ``staging``, then upload its folder to ``remote``, the marker last.

    Returns the folder's URI. Files already uploaded by an interrupted run are not sent again: storage
    writes are atomic, so a file there is whole, and it came from a folder verified against the same digest.
    """
    marker = f"{archive.folder}/{VERIFIED}"
    if remote.is_file(marker) and remote.read_text(marker).strip() == archive.digest:
        log(f"{remote.uri_of(archive.folder)}: already uploaded and verified")
        return remote.uri_of(archive.folder)
    folder = download_archive(archive, staging, mirror, keep_archive, log)
    files = {f"{archive.folder}/{p.name}": p for p in sorted(folder.iterdir()) if p.is_file() and p.name != VERIFIED}
    present = set(remote.list(archive.folder, recursive=True))
    stray = sorted(present - set(files) - {marker})
    if stray:  # training would read them as part of the dataset
        raise DownloadError(f"{remote.uri_of(archive.folder)} holds {len(stray)} files that are not in the release, "
                            f"e.g. {stray[0]}; delete them and rerun")
    missing = [(relative, path) for relative, path in files.items() if relative not in present]
    log(f"uploading {len(missing)} of {len(files)} files to {remote.uri_of(archive.folder)}")
    with ThreadPoolExecutor(max_workers=8) as pool:  # many objects of a few MB: parallel requests
        list(pool.map(lambda item: remote.write_bytes(item[0], item[1].read_bytes()), missing))
    remote.write_text(marker, archive.digest)
    log(f"{remote.uri_of(archive.folder)}: {archive.files} images uploaded and verified")
    return remote.uri_of(archive.folder)


@contextmanager
def _staging_folder(staging: str | None):
    """The given staging folder (kept, so an interrupted run resumes there), else a temporary one."""
    if staging:
        yield Path(staging).expanduser()
    else:
        with tempfile.TemporaryDirectory(prefix="srfp-staging-") as folder:
            yield Path(folder)


def download(datasets: list[str], dest: str | Path, mirror: str | None = None, keep_archives: bool = False,
             staging: str | None = None, log=print) -> list[str]:
    """Download and verify the named datasets (``div2k``, ``flickr2k``) under ``dest``, a local folder, or
    ``s3://bucket/prefix`` through a staging folder; returns the verified folders."""
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        raise DownloadError(f"unknown dataset {unknown[0]!r}; valid values: {', '.join(DATASETS)}")
    archives = [a for a in ARCHIVES if a.dataset in datasets]
    if not is_remote(dest):
        if staging:
            raise DownloadError("--staging is for an s3:// destination; a local --dest is downloaded into directly")
        local = Path(dest).expanduser()
        _log_space(datasets, local, log)
        return [str(download_archive(a, local, mirror, keep_archives, log)) for a in archives]
    remote = Storage(dest)
    with _staging_folder(staging) as local:
        _log_space(datasets, local, log)
        return [upload_archive(a, remote, local, mirror, keep_archives, log) for a in archives]


def _log_space(datasets: list[str], local: Path, log) -> None:
    existing = next(p for p in (local, *local.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 1e9
    log(f"downloading {', '.join(datasets)} into {local} ({free:.0f} GB free; DIV2K needs about 7 GB, Flickr2K 22 GB "
        "while unpacking)")
