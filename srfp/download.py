"""Download DIV2K and Flickr2K from their official addresses and verify what they unpack to.

Each archive unpacks to one folder of PNGs whose content is checked against a published digest:
the MD5 of the concatenated hexadecimal MD5s of its files in name order (the digests deepinv
publishes for these datasets). Downloads resume from a ``.part`` file; a verified folder is marked
and skipped on a rerun; ``--mirror`` fetches the same file names from another base address.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from srfp.errors import UserError


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
        total = have + int(response.headers.get("Content-Length") or 0)
        with open(partial, "ab" if have else "wb") as out:
            done, last = have, 0.0
            while block := response.read(chunk):
                out.write(block)
                done += len(block)
                if time.monotonic() - last > 5:
                    last = time.monotonic()
                    log(f"  {name}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")


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


def download(datasets: list[str], dest: Path, mirror: str | None = None, keep_archives: bool = False,
             log=print) -> list[Path]:
    """Download and verify the named datasets (``div2k``, ``flickr2k``) under ``dest``."""
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        raise DownloadError(f"unknown dataset {unknown[0]!r}; valid values: {', '.join(DATASETS)}")
    existing = next(p for p in (dest, *dest.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 1e9
    log(f"downloading {', '.join(datasets)} into {dest} ({free:.0f} GB free; DIV2K needs about 7 GB, Flickr2K 22 GB "
        "while unpacking)")
    return [download_archive(a, dest, mirror, keep_archives, log) for a in ARCHIVES if a.dataset in datasets]
