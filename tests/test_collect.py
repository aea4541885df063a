"""photos collect against a loopback server speaking the Flickr REST API subset srfp uses, with real-size photos."""

import csv
import functools
import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from srfp.collect import SOURCES, collect
from srfp.flickr import FlickrClient, FlickrError, Http, RateLimit, retry_after
from srfp.grid import main
from srfp.storage import Storage

KEY = "test-key-5f3a9c"
LICENSES = [(0, "All Rights Reserved", ""), (2, "Attribution-NonCommercial License", "https://creativecommons.org/licenses/by-nc/2.0/"),
            (4, "Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
            (5, "Attribution-ShareAlike License", "https://creativecommons.org/licenses/by-sa/2.0/"),
            (9, "Public Domain Dedication (CC0)", "https://creativecommons.org/publicdomain/zero/1.0/"),
            (10, "Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/")]


@functools.cache
def jpeg(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None] + rng.integers(0, 40, (1, 1, 3))
    pixels = np.broadcast_to(ramp, (height, width, 3)) + rng.integers(0, 16, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class Catalogue:
    """Photos the server knows: id -> tags, licence, original size; files and their failures; a request log."""

    def __init__(self):
        self.photos, self.files = {}, {}
        self.failures = {}  # photo path or "TAG page N" -> [(status, headers), ...] to answer before succeeding
        self.corrupt = set()
        self.downloads_left = None  # after this many photo downloads, every one fails with 500
        self.log = []  # (path, query, status)
        self.after_first_search = None  # called once the first search is answered

    def add(self, photo_id, tags, license, size=(1700, 1200), title="a photo", seed=0):
        self.photos[photo_id] = {"tags": tags, "license": license, "size": size, "title": title}
        self.files[f"/photos/{photo_id}_o.jpg"] = jpeg(*size, seed)  # the 1024 px size listed is never fetched

    def downloads(self, status=200):
        return [path for path, _, code in self.log if path.startswith("/photos/") and code == status]

    def searches(self):
        return [query for path, query, _ in self.log if query.get("method") == "flickr.photos.search"]


def search_entry(base: str, photo_id: str, photo: dict) -> dict:
    width, height = photo["size"]
    small = (1024, round(1024 * height / width))
    return {"id": photo_id, "owner": f"{photo_id[-2:]}@N07", "secret": "abc", "server": "65535", "farm": 66,
            "title": photo["title"], "ispublic": 1, "isfriend": 0, "isfamily": 0, "license": str(photo["license"]),
            "ownername": f"owner {photo_id}",
            "url_l": f"{base}/photos/{photo_id}_l.jpg", "width_l": small[0], "height_l": small[1],
            "url_o": f"{base}/photos/{photo_id}_o.jpg", "width_o": width, "height_o": height}


def answer(catalogue: Catalogue, base: str, query: dict) -> dict:
    """The REST API's JSON answer to one call."""
    if query.get("api_key") != KEY:
        return {"stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"}
    if query["method"] == "flickr.photos.licenses.getInfo":
        return {"licenses": {"license": [{"id": i, "name": n, "url": u} for i, n, u in LICENSES]}, "stat": "ok"}
    if query["method"] == "flickr.photos.search":
        allowed = {int(i) for i in query["license"].split(",")}
        found = [(k, p) for k, p in catalogue.photos.items() if query["tags"] in p["tags"] and p["license"] in allowed]
        per_page, page = int(query["per_page"]), int(query["page"])
        pages = max(1, -(-len(found) // per_page))
        page = min(page, pages)  # Flickr answers a page past the end with the last one
        listed = [search_entry(base, k, p) for k, p in found[(page - 1) * per_page: page * per_page]]
        if catalogue.after_first_search:
            catalogue.after_first_search()
            catalogue.after_first_search = None
        return {"photos": {"page": page, "pages": pages, "perpage": per_page, "total": len(found), "photo": listed},
                "stat": "ok"}
    return {"stat": "fail", "code": 112, "message": f"Method \"{query['method']}\" not found"}


@pytest.fixture
def flickr(monkeypatch):
    catalogue = Catalogue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path, _, raw = self.path.partition("?")
            query = dict(urllib.parse.parse_qsl(raw))
            is_download = path.startswith("/photos/")
            pending = catalogue.failures.get(path if is_download else f"{query.get('tags')} page {query.get('page')}")
            if pending:
                self.reply(*pending.pop(0))
            elif is_download and catalogue.downloads_left == 0:
                self.reply(500, b"")
            elif is_download:
                if catalogue.downloads_left is not None:
                    catalogue.downloads_left -= 1
                photo_id = path.split("/")[-1].split("_")[0]
                body = catalogue.files[path]
                self.reply(200, body[: len(body) // 2] + bytes(1000) if photo_id in catalogue.corrupt else body)
            elif path == "/services/rest/":
                base = f"http://127.0.0.1:{self.server.server_port}"
                body = json.dumps(answer(catalogue, base, query))
                if query.get("nojsoncallback") != "1" or query.get("format") != "json":
                    body = f"jsonFlickrApi({body})"
                self.reply(200, body.encode(), {"Content-Type": "application/json"})
            elif path == "/proxy-error/":  # an HTML page quoting the request, as some proxies answer
                self.reply(200, f"<html>cannot forward {self.path}</html>".encode())
            else:
                self.reply(404, b"")
            catalogue.log.append((path, query, self.status))

        def reply(self, status, body, headers=None):
            self.status = status
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    catalogue.endpoint = f"http://127.0.0.1:{server.server_port}/services/rest/"
    monkeypatch.setenv("SRFP_FLICKR_API", catalogue.endpoint)
    yield catalogue
    server.shutdown()
    server.server_close()


def client_for(catalogue, sleeps: list, attempts: int = 4) -> FlickrClient:
    """A client whose waits are recorded, not slept."""
    http = Http(KEY, attempts=attempts, sleep=sleeps.append, log=lambda line: None)
    return FlickrClient(KEY, catalogue.endpoint, http, RateLimit(sleep=lambda seconds: None))


def sources(dest) -> dict:
    with open(dest / SOURCES, newline="") as handle:
        return {row["photo_id"]: row for row in csv.DictReader(handle)}


def test_collects_the_largest_size_per_tag_once_with_sources(flickr, tmp_path):
    flickr.add("1001", ["city"], 4, title="Main street, at night", seed=1)
    flickr.add("1002", ["city"], 5, seed=2)
    flickr.add("1003", ["city"], 2, seed=3)  # NonCommercial: not asked for
    flickr.add("1004", ["city"], 9, seed=4)
    flickr.corrupt.add("1004")
    flickr.add("1005", ["city"], 10, size=(1000, 800), seed=5)  # 0.8 MP
    flickr.add("1006", ["city", "food"], 4, seed=6)
    flickr.add("1007", ["city"], 4, seed=7)
    flickr.add("1008", ["food"], 5, seed=8)
    flickr.add("1009", ["food"], 4, seed=9)
    flickr.failures["/photos/1002_o.jpg"] = [(503, b"", {})]
    flickr.failures["city page 2"] = [(429, b"", {"Retry-After": "7"})]
    sleeps, lines = [], []

    reports = collect(client_for(flickr, sleeps), ["city", "food"], 3, Storage(tmp_path), page_size=2, log=lines.append)

    stored = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg"))
    assert stored == ["city/1001.jpg", "city/1002.jpg", "city/1006.jpg", "food/1008.jpg", "food/1009.jpg"]
    for path in stored:
        with Image.open(tmp_path / path) as image:
            assert image.size == (1700, 1200)  # the original, not the 1024 px size also listed
        assert (tmp_path / path).read_bytes() == flickr.files[f"/photos/{path[-8:-4]}_o.jpg"]
    assert sorted(flickr.downloads()) == ["/photos/1001_o.jpg", "/photos/1002_o.jpg", "/photos/1004_o.jpg",
                                          "/photos/1006_o.jpg", "/photos/1008_o.jpg", "/photos/1009_o.jpg"]
    assert [(q["tags"], q["page"], q["license"]) for q in flickr.searches()] == [
        ("city", "1", "4,5,9,10"), ("city", "2", "4,5,9,10"), ("city", "2", "4,5,9,10"), ("city", "3", "4,5,9,10"),
        ("food", "1", "4,5,9,10"), ("food", "2", "4,5,9,10")]
    assert sleeps == [2.0, 7.0]  # the 503: backoff; the 429: its Retry-After
    rows = sources(tmp_path)
    assert sorted(rows) == ["1001", "1002", "1006", "1008", "1009"]
    assert rows["1001"] == {"photo_id": "1001", "tag": "city", "file": "city/1001.jpg", "owner": "01@N07",
                            "owner_name": "owner 1001", "title": "Main street, at night", "license": "4",
                            "license_name": "Attribution License",
                            "license_url": "https://creativecommons.org/licenses/by/2.0/",
                            "page_url": "https://www.flickr.com/photos/01@N07/1001", "width": "1700", "height": "1200"}
    assert rows["1006"]["tag"] == "city"
    assert lines == [
        "city: 3 of 3 photos (3 downloaded, 0 already there); skipped 1 under 2 MP, 1 corrupt, 0 kept under another "
        "tag, 0 unavailable; 3 pages read",
        "food: 2 of 3 photos (2 downloaded, 0 already there); only 2 found; skipped 0 under 2 MP, 0 corrupt, "
        "1 kept under another tag, 0 unavailable; 2 pages read"]
    assert [r.kept for r in reports] == [3, 2]


def test_a_photo_shifted_onto_the_next_page_counts_once(flickr, tmp_path):
    for number in range(1, 5):
        flickr.add(f"400{number}", ["snow"], 4, seed=number)

    def upload_a_newer_photo():  # most relevant: it comes first, and pushes the others down by one
        flickr.photos = {"4000": {**flickr.photos["4001"], "title": "new"}, **flickr.photos}
        flickr.files["/photos/4000_o.jpg"] = flickr.files["/photos/4001_o.jpg"]

    flickr.after_first_search = upload_a_newer_photo
    reports = collect(client_for(flickr, []), ["snow"], 4, Storage(tmp_path), page_size=2, log=lambda line: None)

    assert sorted(p.name for p in tmp_path.rglob("*.jpg")) == ["4001.jpg", "4002.jpg", "4003.jpg", "4004.jpg"]
    assert reports[0].kept == 4 and reports[0].pages == 3


def test_an_interrupted_run_resumes_without_downloading_twice(flickr, tmp_path):
    for number in range(6):
        flickr.add(f"20{number:02d}", ["sea"], 4, seed=number)
    flickr.downloads_left = 2  # then the image server fails with 500 until restarted
    sleeps = []

    with pytest.raises(FlickrError, match="HTTP 500, 4 attempts; .* rerun later to resume"):
        collect(client_for(flickr, sleeps), ["sea"], 5, Storage(tmp_path), page_size=4, log=lambda line: None)
    assert sleeps == [2.0, 4.0, 8.0]
    assert sorted(sources(tmp_path)) == ["2000", "2001"]  # credited although the tag did not finish
    first = flickr.downloads()
    assert len(first) == 2
    (tmp_path / "sea" / "2001.jpg").write_bytes(b"\xff\xd8 cut short")  # as if damaged since

    flickr.downloads_left = None
    lines = []
    collect(client_for(flickr, []), ["sea"], 5, Storage(tmp_path), page_size=4, log=lines.append)

    assert flickr.downloads().count("/photos/2000_o.jpg") == 1  # kept, not fetched again
    assert flickr.downloads().count("/photos/2001_o.jpg") == 2  # did not decode: fetched again
    assert sorted(flickr.downloads()[len(first):]) == [f"/photos/20{n:02d}_o.jpg" for n in range(1, 5)]
    assert sorted(sources(tmp_path)) == ["2000", "2001", "2002", "2003", "2004"]
    assert lines[0].startswith("sea: 5 of 5 photos (4 downloaded, 1 already there)")
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_command_line_collects_and_never_shows_the_key(flickr, tmp_path, capsys, monkeypatch):
    flickr.add("3001", ["tree"], 9, seed=1)
    flickr.add("3002", ["tree"], 0, seed=2)  # all rights reserved, even when asked for 4 and 9 only
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.delenv("FLICKR_API_KEY", raising=False)
    monkeypatch.setattr(RateLimit, "wait", lambda self: None)  # pacing: tested below
    dest = tmp_path / "flickr"

    assert main(["photos", "collect", "--tags", "tree", "--per-tag", "2", "--dest", str(dest), "--licenses", "4,9",
                 "--api-key-file", str(key_file)]) == 0
    assert sorted(sources(dest)) == ["3001"]
    out = capsys.readouterr().out
    assert "tree: 1 of 2 photos (1 downloaded, 0 already there); only 1 found" in out

    key_file.write_text("wrong-key-77\n")
    assert main(["photos", "collect", "--tags", "tree", "--per-tag", "2", "--dest", str(dest),
                 "--api-key-file", str(key_file)]) == 2
    err = capsys.readouterr().err
    assert "Invalid API Key" in err and "https://www.flickr.com/services/apps/create/" in err
    assert "wrong-key-77" not in err

    key_file.write_text(KEY + "\n")
    requests = len(flickr.log)
    (tmp_path / "a-file").write_text("")
    assert main(["photos", "collect", "--tags", "tree", "--per-tag", "2", "--dest", str(tmp_path / "a-file"),
                 "--api-key-file", str(key_file)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and str(tmp_path / "a-file") in line
    assert len(flickr.log) == requests  # refused before any call

    assert main(["photos", "collect", "--tags", "tree", "--per-tag", "2", "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no Flickr API key")
    assert "https://www.flickr.com/services/apps/create/" in err and "FLICKR_API_KEY" in err and "--api-key-file" in err


def test_failures_never_show_the_key(flickr):
    unused_port = "http://127.0.0.1:9/services/rest/"  # discard port: nothing listens
    with pytest.raises(FlickrError) as failure:
        Http(KEY, attempts=2, sleep=lambda seconds: None, log=lambda line: None).get(f"{unused_port}?api_key={KEY}")
    assert KEY not in str(failure.value) and "api_key=***" in str(failure.value)
    proxy = FlickrClient(KEY, flickr.endpoint.replace("/services/rest/", "/proxy-error/"))
    with pytest.raises(FlickrError, match="is not JSON") as failure:
        proxy.licenses()
    assert KEY not in str(failure.value) and "api_key=***" in str(failure.value)


def test_api_calls_are_spaced_for_3600_an_hour_and_retry_after_is_honoured():
    now, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    rate = RateLimit(clock=lambda: now[0], sleep=sleep)
    rate.wait()
    now[0] += 0.25
    rate.wait()
    now[0] += 3
    rate.wait()
    assert slept == [0.75]
    assert retry_after("120") == 120 and retry_after(None) is None
    assert 0 <= retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0


def _grid_with(tmp_path, photos: dict):
    import yaml

    from srfp.gridspec import resolve_grid_path

    grid = yaml.safe_load(resolve_grid_path("smoke").read_text())
    grid["photos"].update(photos)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.mark.parametrize("photos, message", [
    ({"collect": {"tags": ["sky/night"]}}, "photos.collect.tags: ['sky/night'] is not allowed; give one or more tags"),
    ({"collect": {"tags": ["sky", "sky"]}}, "photos.collect.tags: ['sky', 'sky'] is not allowed; a tag is named twice"),
    ({"collect": {"tags": ["sky"], "per_tag": 0}}, "photos.collect.per_tag: 0 is not allowed; expected at least 1"),
    ({"collect": {"tags": ["sky"], "licenses": []}}, "photos.collect.licenses: [] is not allowed"),
    ({"collect": {"tags": ["sky"]}}, "photos.source: 'bundled' is not allowed with photos.collect"),
])
def test_the_grid_files_collection_is_checked_at_load(tmp_path, capsys, photos, message):
    path = _grid_with(tmp_path, photos)
    assert main(["plan", "--grid", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_photos_starts_from_nothing_but_a_key_when_the_grid_names_a_collection(flickr, tmp_path, monkeypatch):
    from srfp.photos import read_manifest

    flickr.add("5001", ["sky"], 4, seed=1)
    flickr.add("5002", ["sky"], 5, seed=2)
    monkeypatch.setattr(RateLimit, "wait", lambda self: None)  # pacing: tested above
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    source, root = tmp_path / "flickr", tmp_path / "run"
    path = _grid_with(tmp_path, {"source": str(source), "collect": {"tags": ["sky"], "per_tag": 1},
                                 "min_megapixels": 2.0, "split": {"train": 1, "val": 0, "test": 0}})

    assert main(["photos", "--grid", str(path), "--root", str(root)]) == 0
    assert sorted(sources(source)) == ["5001"]
    manifest = read_manifest(Storage(root))
    assert list(manifest["image_id"]) == ["sky-5001"]
    assert manifest[["owner_name", "license", "license_url", "page_url"]].to_dict("records") == [{
        "owner_name": "owner 5001", "license": "Attribution License",
        "license_url": "https://creativecommons.org/licenses/by/2.0/",
        "page_url": "https://www.flickr.com/photos/01@N07/5001"}]

    monkeypatch.delenv("FLICKR_API_KEY")
    requests = len(flickr.log)
    assert main(["photos", "--grid", str(path), "--root", str(root)]) == 0  # done: no key, no call needed
    assert len(flickr.log) == requests


def test_the_report_credits_a_collected_photo_set():
    import pandas as pd

    from srfp.analysis.report import dataset_statistics

    manifest = pd.DataFrame({"license": ["Attribution License", "Attribution License", "Public Domain Mark", None]})
    lines = dataset_statistics(pd.DataFrame(), manifest).lines
    assert lines[0].startswith("The 4 photos come from Flickr (2 under Attribution License, 1 under Public Domain "
                               "Mark, 1 under no listed source). Each photo's owner, licence and page are in "
                               "`photos/manifest.parquet`")
    bundled = pd.DataFrame({"license": [None, None]})
    assert not any("Flickr" in line for line in dataset_statistics(pd.DataFrame(), bundled).lines)
