"""``python -m srfp.grid published fetch``: the native published models' official weight files, downloaded from
the addresses of the catalogue into ``DIR/<model_id>/<file>``, where ``published superresolve`` reads them.

Each host is reached its own way: Google Drive files and folders through gdown, Dropbox with ``?dl=1``, GitHub
releases and other HTTP(S) addresses by :func:`srfp.download.fetch`; gdown and ``fetch`` both resume an
interrupted transfer. An address whose last path component is not the file's name is an archive (or a Drive
folder) holding it: the archive is downloaded once into ``DIR/.downloads``, the named files are taken out of it
and it is removed. Each file is verified by the SHA-256 prefix its authors publish, else by loading it as weights
(``torch.load`` with ``weights_only=True``, or safetensors); a file that fails is removed. A verified file is
recorded in ``DIR/<model_id>/<file>.srfp-verified`` (its SHA-256, as ``sha256sum`` writes it) and skipped on a rerun.
Addresses no program can fetch (Baidu Pan) and failed downloads are listed, each with its address and the path
to put the file at; a file put there by hand is verified by the next run.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlparse

from srfp.download import VERIFIED, DownloadError, fetch
from srfp.published import Catalogue, PublishedEntry, WeightsFile

#: Hosts whose files only a browser gets (a password, a client app).
BROWSER_ONLY = ("pan.baidu.com",)
_DRIVE_FILE = re.compile(r"/file/d/([\w-]+)")
_DRIVE_FOLDER = re.compile(r"/folders/([\w-]+)")
DOWNLOADS = ".downloads"


@dataclass(frozen=True)
class Wanted:
    """One official weight file of a native entry and the path it goes to."""

    entry: PublishedEntry
    weights: WeightsFile
    path: Path

    @property
    def marker(self) -> Path:
        return self.path.with_name(self.path.name + VERIFIED)


def fetch_weights(catalogue: Catalogue, dest: str | Path, only: str | None = None, log=print) -> list[Path]:
    """Download and verify the weight files of the native entries (``only``: one model's name or id) into
    ``dest``; returns the verified files. Raises DownloadError listing every file still missing."""
    dest = Path(dest).expanduser()
    entries = _selected(catalogue, only)
    wanted = []
    for entry in entries:
        if entry.run == "ingest":
            _log_ingest(entry, log)
        for weights in entry.weights if entry.run == "native" else ():
            if weights.url and weights.file:
                wanted.append(Wanted(entry, weights, entry.weights_path(dest, weights)))
            else:
                log(f"{entry.model_id}: no official weights address is known (see {catalogue.source}); not fetched")
    failures = []
    for url in dict.fromkeys(w.weights.url for w in wanted):
        pending = [w for w in wanted if w.weights.url == url and not _already_verified(w, log)]
        failures += _fetch_address(url, pending, dest, log) if pending else []
    for missing in failures:
        direct = _url_file_name(missing.weights.url) == missing.weights.file
        inside = "" if direct else ", inside the archive or folder there"
        log(f"missing: {missing.entry.model_id}: {missing.weights.file} comes from {missing.weights.url}{inside}; "
            f"put it at {missing.path}")
    if failures:
        raise DownloadError(f"{len(failures)} of {len(wanted)} weight files are missing or did not verify, each "
                            f"listed above with its address and path; put them there and rerun to verify them")
    return [w.path for w in wanted]


def _selected(catalogue: Catalogue, only: str | None) -> list[PublishedEntry]:
    if only is None:
        return catalogue.models
    chosen = [e for e in catalogue.models if only.lower() in (e.name.lower(), e.model_id.lower())]
    if not chosen:
        names = ", ".join(dict.fromkeys(e.name for e in catalogue.models))
        raise DownloadError(f"--only {only!r} names no published model; valid values: {names}, or a model id")
    return chosen


def _log_ingest(entry: PublishedEntry, log) -> None:
    steps = "\n".join(f"    {line}" for line in entry.ingest.strip().splitlines())
    log(f"{entry.model_id}: ingest only, nothing to fetch: the official code ({entry.code}) makes its images:\n"
        f"{steps}")


def _already_verified(wanted: Wanted, log) -> bool:
    """Whether the file is recorded as verified, or was put in place by hand and verifies now."""
    if wanted.marker.is_file() and wanted.path.is_file():
        digest, _, name = wanted.marker.read_text().strip().partition("  ")
        if name == wanted.weights.file and digest.startswith(wanted.weights.sha256_prefix or ""):
            log(f"{wanted.entry.model_id}: {wanted.weights.file} already downloaded and verified")
            return True
    if not wanted.path.is_file():
        return False
    try:
        _verify(wanted, log)
    except DownloadError as error:
        log(f"{wanted.entry.model_id}: {error}; fetching it again")
        return False
    return True


def _fetch_address(url: str, pending: list[Wanted], dest: Path, log) -> list[Wanted]:
    """Download the pending files of one address and verify them; returns the files that failed, each logged."""
    try:
        _download_files(url, pending, dest, log)
    except (DownloadError, OSError) as error:  # gdown's requests errors are OSErrors
        log(f"{url}: {error}")
    downloaded = [wanted for wanted in pending if wanted.path.is_file()]
    failures = [wanted for wanted in pending if wanted not in downloaded]
    for wanted in downloaded:
        try:
            _verify(wanted, log)
        except DownloadError as error:
            log(f"{wanted.entry.model_id}: {error}")
            failures.append(wanted)
    return failures


def _download_files(url: str, pending: list[Wanted], dest: Path, log) -> None:
    """Put each pending file at its path (unverified), each host its own way."""
    host = urlparse(url).hostname or ""
    if host in BROWSER_ONLY:
        raise DownloadError(f"{host} serves files to a browser only: open the address there (the catalogue's "
                            f"comment gives any password)")
    for wanted in pending:
        wanted.path.parent.mkdir(parents=True, exist_ok=True)
    folder = _DRIVE_FOLDER.search(url) if host == "drive.google.com" else None
    if folder:
        for wanted in pending:
            _drive_folder_file(folder.group(1), wanted, log)
    elif _url_file_name(url) == pending[0].weights.file:
        _download(url, pending[0].path, log)
    else:
        archive = dest / DOWNLOADS / _archive_name(url)
        if not archive.is_file():  # an earlier run may have downloaded it and stopped before unpacking
            archive.parent.mkdir(parents=True, exist_ok=True)
            _download(url, archive, log)
        _extract(archive, pending, log)
        archive.unlink()


def _download(url: str, target: Path, log) -> None:
    """One file from a Google Drive file address (gdown), else over HTTP(S) (Dropbox's direct ``?dl=1``)."""
    log(f"downloading {url} to {target}")
    drive_file = _DRIVE_FILE.search(url) if urlparse(url).hostname == "drive.google.com" else None
    if drive_file:
        import gdown

        _gdown(gdown.download, id=drive_file.group(1), output=str(target), quiet=False, resume=True)
    else:
        fetch(_direct(url), target, log)


def _drive_folder_file(folder_id: str, wanted: Wanted, log) -> None:
    """The named file of a Google Drive folder, found in the folder's listing and downloaded by its id."""
    import gdown

    log(f"downloading {wanted.weights.file} of the Google Drive folder {folder_id} to {wanted.path}")
    listing = _gdown(gdown.download_folder, id=folder_id, output=str(wanted.path.parent), quiet=True,
                     skip_download=True)
    ids = [item.id for item in listing if Path(item.path).name == wanted.weights.file]
    if not ids:
        raise DownloadError(f"the Google Drive folder {folder_id} holds no {wanted.weights.file}")
    _gdown(gdown.download, id=ids[0], output=str(wanted.path), quiet=False, resume=True)


def _gdown(function, **arguments):
    """A gdown call whose own failures (a refused or changed Drive page) become DownloadErrors."""
    import gdown

    try:
        return function(**arguments)
    except gdown.DownloadError as error:
        raise DownloadError(f"Google Drive: {error}") from None


def _direct(url: str) -> str:
    """Dropbox's direct download address (``dl=1``) for its share page (``dl=0``); other addresses as they are."""
    parsed = urlparse(url)
    if not (parsed.hostname or "").endswith("dropbox.com"):
        return url
    return parsed._replace(query=urlencode({**dict(parse_qsl(parsed.query)), "dl": "1"})).geturl()


def _url_file_name(url: str) -> str:
    return urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]


def _archive_name(url: str) -> str:
    drive_file = _DRIVE_FILE.search(url)
    return drive_file.group(1) if drive_file else _url_file_name(url)


def _extract(archive: Path, pending: list[Wanted], log) -> None:
    """Copy each pending file out of ``archive`` (a zip or tar, the file at any depth) to its path."""
    log(f"taking {', '.join(w.weights.file for w in pending)} out of {archive.name}")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                members = {Path(name).name: name for name in bundle.namelist()}
                for wanted in pending:
                    with bundle.open(_member(members, wanted, archive)) as source:
                        _copy(source, wanted.path)
        else:
            with tarfile.open(archive) as bundle:
                members = {Path(member.name).name: member for member in bundle.getmembers() if member.isfile()}
                for wanted in pending:
                    _copy(bundle.extractfile(_member(members, wanted, archive)), wanted.path)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        archive.unlink()
        raise DownloadError(f"{archive.name} is not a complete archive ({error}); it was removed, rerun to fetch "
                            f"it again") from None


def _member(members: dict, wanted: Wanted, archive: Path):
    if wanted.weights.file not in members:
        raise DownloadError(f"{archive.name} holds no {wanted.weights.file}; is the address the official one?")
    return members[wanted.weights.file]


def _copy(source, target: Path) -> None:
    partial = target.with_name(target.name + ".part")
    with open(partial, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    partial.replace(target)


def _verify(wanted: Wanted, log) -> None:
    """Check the file against its published SHA-256 prefix, else that it loads as weights; record it as
    verified, or remove it and raise DownloadError."""
    digest = _sha256(wanted.path)
    prefix = wanted.weights.sha256_prefix
    if prefix and not digest.startswith(prefix):
        problem = f"its SHA-256 {digest[:16]}... does not start with the published {prefix}"
    elif not prefix and not _loads_as_weights(wanted.path):
        problem = "it does not load as weights (torch.load with weights_only=True, or safetensors)"
    else:
        wanted.marker.write_text(f"{digest}  {wanted.weights.file}\n")
        log(f"{wanted.entry.model_id}: {wanted.weights.file} verified "
            f"({'published SHA-256 prefix' if prefix else 'loads as weights'})")
        return
    wanted.path.unlink()
    wanted.marker.unlink(missing_ok=True)
    raise DownloadError(f"{wanted.path.name} is corrupt or not the official file: {problem}; it was removed")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _loads_as_weights(path: Path) -> bool:
    """Whether ``path`` is a safetensors file or a torch file of tensors (a state_dict, or one inside a dict)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, "pt") as weights:
                return bool(weights.keys())
        except (SafetensorError, OSError):
            return False
    try:
        content = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # unpickling raises many types: each means the file is not loadable weights
        return False
    values = content.values() if isinstance(content, dict) else ()
    inner = [v for value in values if isinstance(value, dict) for v in value.values()]
    return any(isinstance(v, torch.Tensor) for v in [*values, *inner])
