"""Collect a photo source from Flickr, as the study built Flickr1K: ``photos collect``.

For each tag, photos.search is read page by page, most relevant first, for photos under one of ``licenses``
(Flickr filters them), until ``per_tag`` photos are kept. A photo is kept when its largest listed size has
at least ``min_megapixels``, and that file downloads and decodes with that many pixels. It is stored as
``<dest>/<tag>/<photo id>.<ext>``: one subfolder per tag, the source ``photos`` reads. A photo found under
two tags is kept once, under the first. ``<dest>/sources.csv`` credits every stored photo (owner, title,
licence, page URL, size); it is rewritten after each tag, and when a run stops. ``<dest>/.srfp-collected``,
written last, records the request a collection finished, so that ``photos`` with ``photos.collect`` in the
grid file skips a collection already done.

A rerun resumes: a photo already stored that decodes counts as kept and is not downloaded again. Files
are written whole or not at all (storage writes are atomic), so an interrupted download leaves nothing.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from srfp.datasets import image_files
from srfp.flickr import REDISTRIBUTABLE, FlickrClient, FlickrError, HttpStatusError, License, Photo, api_key, tags_problem
from srfp.gridspec import PhotoSettings
from srfp.images import ImageDecodeError, decode_image
from srfp.storage import Storage

SOURCES = "sources.csv"
COLLECTED = ".srfp-collected"  # the request of a collection that finished, as JSON
COLUMNS = ("photo_id", "tag", "file", "owner", "owner_name", "title", "license", "license_name", "license_url",
           "page_url", "width", "height")


@dataclass
class TagReport:
    """What one tag's collection kept and skipped."""

    tag: str
    wanted: int
    downloaded: int = 0
    present: int = 0
    small: int = 0
    corrupt: int = 0
    elsewhere: int = 0
    unavailable: int = 0
    pages: int = 0

    @property
    def kept(self) -> int:
        return self.downloaded + self.present

    def line(self, min_megapixels: float) -> str:
        short = f"; only {self.kept} found" if self.kept < self.wanted else ""
        return (f"{self.tag}: {self.kept} of {self.wanted} photos ({self.downloaded} downloaded, {self.present} "
                f"already there){short}; skipped {self.small} under {min_megapixels:g} MP, {self.corrupt} corrupt, "
                f"{self.elsewhere} kept under another tag, {self.unavailable} unavailable; {self.pages} pages read")


def check_tags(tags: list[str], per_tag: int) -> None:
    problem = tags_problem(tags)
    if problem:
        raise FlickrError(f"--tags {','.join(tags)!r}: {problem}, separated by commas")
    if per_tag < 1:
        raise FlickrError(f"--per-tag {per_tag}: expected 1 or more")


def check_licenses(licenses: tuple[int, ...], known: dict[int, License]) -> None:
    unknown = sorted(set(licenses) - set(known))
    if unknown or not licenses:
        listed = "; ".join(f"{lic.id} {lic.name}" for lic in known.values())
        raise FlickrError(f"--licenses: {unknown or 'none given'} not among Flickr's licences: {listed}")


def stored_photos(dest: Storage) -> dict[str, str]:
    """Photo id -> file (``tag/id.ext``) of the photos a collection already stored."""
    return {path.rsplit("/", 1)[-1].rsplit(".", 1)[0]: path for path in image_files(dest) if path.count("/") == 1}


def read_sources(dest: Storage) -> dict[str, dict]:
    if not dest.is_file(SOURCES):
        return {}
    return {row["photo_id"]: row for row in csv.DictReader(io.StringIO(dest.read_text(SOURCES)))}


def write_sources(dest: Storage, rows: dict[str, dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows.values(), key=lambda row: (row["tag"], row["file"])))
    dest.write_text(SOURCES, buffer.getvalue())


def source_row(photo: Photo, tag: str, file: str, license: License) -> dict:
    return {"photo_id": photo.id, "tag": tag, "file": file, "owner": photo.owner, "owner_name": photo.owner_name,
            "title": photo.title, "license": license.id, "license_name": license.name, "license_url": license.url,
            "page_url": photo.page_url, "width": photo.width, "height": photo.height}


def _decodes(data: bytes, name: str, min_megapixels: float) -> bool:
    """Whether ``data`` is a whole image of at least ``min_megapixels``."""
    try:
        height, width = decode_image(data, name).shape[:2]
    except ImageDecodeError:
        return False
    return height * width / 1e6 >= min_megapixels


class Collector:
    """One collection into ``dest``: the photos stored so far and their sources rows, across tags."""

    def __init__(self, client: FlickrClient, dest: Storage, licenses: tuple[int, ...], known: dict[int, License],
                 min_megapixels: float):
        self.client, self.dest, self.licenses, self.known = client, dest, licenses, known
        self.min_megapixels = min_megapixels
        self.files = stored_photos(dest)
        self.rows = {key: row for key, row in read_sources(dest).items() if self.files.get(key) == row["file"]}

    def tag(self, tag: str, per_tag: int, page_size: int) -> TagReport:
        report = TagReport(tag, per_tag)
        page, pages, seen = 1, 1, set()
        while report.kept < per_tag and page <= pages:
            result = self.client.search(tag, self.licenses, page, page_size)
            report.pages += 1
            report.unavailable += result.unlisted
            pages, page = result.pages, page + 1
            for photo in result.photos:
                if report.kept == per_tag:
                    break
                if photo.id in seen:  # results shift when photos are uploaded between two pages' calls
                    continue
                seen.add(photo.id)
                outcome = self.take(photo, tag)
                setattr(report, outcome, getattr(report, outcome) + 1)
        return report

    def take(self, photo: Photo, tag: str) -> str:
        """Store ``photo`` under ``tag`` unless it is there already; returns the TagReport count it adds to."""
        stored = self.files.get(photo.id)
        if stored and not stored.startswith(f"{tag}/"):
            return "elsewhere"
        file = stored or f"{tag}/{photo.id}{photo.suffix}"
        if stored and _decodes(self.dest.read_bytes(file), self.dest.uri_of(file), self.min_megapixels):
            outcome = "present"
        else:
            if photo.megapixels < self.min_megapixels:
                return "small"
            try:
                data = self.client.http.get(photo.url)
            except HttpStatusError:  # deleted or made private since the search
                return "unavailable"
            if not _decodes(data, photo.url, self.min_megapixels):
                return "corrupt"
            self.dest.write_bytes(file, data)
            self.files[photo.id], outcome = file, "downloaded"
        self.rows[photo.id] = source_row(photo, tag, file, self.known[photo.license])
        return outcome


def collect(client: FlickrClient, tags: list[str], per_tag: int, dest: Storage,
            licenses: tuple[int, ...] = REDISTRIBUTABLE, min_megapixels: float = 2.0, page_size: int = 100,
            log=print) -> list[TagReport]:
    """Collect ``per_tag`` photos of each tag into ``dest``; one progress line per tag."""
    check_tags(tags, per_tag)
    dest.check()
    known = client.licenses()
    check_licenses(licenses, known)
    collector = Collector(client, dest, licenses, known, min_megapixels)
    reports = []
    for tag in tags:
        try:
            reports.append(collector.tag(tag, per_tag, page_size))
        finally:
            write_sources(dest, collector.rows)
        log(reports[-1].line(min_megapixels))
    dest.write_text(COLLECTED, _request(tags, per_tag, licenses, min_megapixels))
    return reports


def _request(tags: list[str], per_tag: int, licenses: tuple[int, ...], min_megapixels: float) -> str:
    return json.dumps({"tags": tags, "per_tag": per_tag, "licenses": list(licenses), "min_megapixels": min_megapixels})


def collect_source(settings: PhotoSettings, log=print) -> None:
    """Fill ``settings.source`` as ``settings.collect`` asks, unless a collection finished there with the same
    request (a rerun of ``run`` needs neither the key nor the network then)."""
    request, dest = settings.collect, Storage(settings.source)
    asked = _request(request.tags, request.per_tag, tuple(request.licenses), settings.min_megapixels)
    if dest.is_file(COLLECTED) and dest.read_text(COLLECTED) == asked:
        log(f"photos collect: done before in {dest.uri}")
        return
    collect(FlickrClient(api_key()), request.tags, request.per_tag, dest, tuple(request.licenses),
            settings.min_megapixels, log=log)
