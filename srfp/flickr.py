"""A small client of the Flickr REST API: search photos by tag and licence, and fetch files, politely.

Calls go to ``$SRFP_FLICKR_API`` (default https://api.flickr.com/services/rest/) with
``format=json&nojsoncallback=1``. API calls are spaced to stay under Flickr's limit of 3,600 per hour and
key. Every request (API call or photo download) is retried on HTTP 429, on 5xx and on network errors, after
the server's ``Retry-After`` when it sends one, else after an exponential backoff. The API key travels in
the query string, so every message that could show a URL has it replaced by ``***``.
"""

from __future__ import annotations

import email.utils
import http.client
import itertools
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from srfp.errors import UserError

API_URL = "https://api.flickr.com/services/rest/"
KEY_PAGE = "https://www.flickr.com/services/apps/create/"
CALLS_PER_HOUR = 3600

#: Licence ids of flickr.photos.licenses.getInfo whose photos may be shared adapted (the photo set is
#: downscaled, then super-resolved), for any purpose: 4 Attribution License (CC BY 2.0), 5 Attribution-ShareAlike
#: License (CC BY-SA 2.0), 9 Public Domain Dedication (CC0), 10 Public Domain Mark. Left out: 0 All Rights
#: Reserved, the NonCommercial (1, 2, 3) and NoDerivs (3, 6) licences, 7 No known copyright restrictions and
#: 8 United States Government Work (not Creative Commons).
REDISTRIBUTABLE = (4, 5, 9, 10)

#: Size suffixes whose URL and dimensions photos.search returns as extras (url_o, width_o, ...), largest first:
#: the original, 2048, 1600 and 1024 px on the long side.
SIZES = ("o", "k", "h", "l")


TAG = re.compile(r"[A-Za-z0-9_-]+")


def tags_problem(tags: list[str]) -> str | None:
    """What is wrong with a list of tags to collect (each also names a folder), or None."""
    if not tags or not all(TAG.fullmatch(tag) for tag in tags):
        return "give one or more tags of letters, digits, _ and -"
    if len(set(tags)) != len(tags):
        return "a tag is named twice"
    return None


class FlickrError(UserError, RuntimeError):
    """The Flickr API or a download failed in a way the user can act on; never holds the API key."""


class HttpStatusError(FlickrError):
    """A request answered with an HTTP status that retrying will not change (a 4xx other than 429)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def api_url() -> str:
    return os.environ.get("SRFP_FLICKR_API") or API_URL


def api_key(key_file: str | None = None) -> str:
    """The API key from ``key_file`` (its first line) or ``$FLICKR_API_KEY``; a clear error without one."""
    if key_file:
        try:
            key = Path(key_file).expanduser().read_text().strip()
        except OSError as error:
            raise FlickrError(f"cannot read the API key file {key_file}: {error.strerror}") from None
        if not key:
            raise FlickrError(f"the API key file {key_file} is empty; put the key on its first line")
        return key
    key = os.environ.get("FLICKR_API_KEY", "").strip()
    if not key:
        raise FlickrError(f"no Flickr API key; get one (free, non-commercial) at {KEY_PAGE}, then set FLICKR_API_KEY "
                          "or pass --api-key-file FILE (a file holding the key)")
    return key


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date; None without one."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Http:
    """GET with retries on 429, 5xx and network errors; messages never show ``secret``."""

    def __init__(self, secret: str, attempts: int = 6, backoff: float = 2.0, timeout: float = 60, sleep=time.sleep,
                 log=print):
        self.secret, self.attempts, self.backoff, self.timeout = secret, attempts, backoff, timeout
        self.sleep, self.log = sleep, log

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text

    def get(self, url: str) -> bytes:
        for attempt in itertools.count(1):
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as error:
                if error.code != 429 and error.code < 500:
                    raise HttpStatusError(f"{self.redact(url)}: HTTP {error.code} {error.reason}", error.code) from None
                problem, wait = f"HTTP {error.code}", retry_after(error.headers.get("Retry-After"))
            except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, cut short
                problem, wait = self.redact(f"{type(error).__name__}: {error}"), None
            except ValueError as error:  # a malformed URL
                raise FlickrError(self.redact(f"{url}: {error}")) from None
            if attempt == self.attempts:
                raise FlickrError(f"{self.redact(url)}: {problem}, {self.attempts} attempts; Flickr may be down or "
                                  "limiting this key, rerun later to resume") from None
            wait = self.backoff * 2 ** (attempt - 1) if wait is None else wait
            self.log(f"  {problem} from {urllib.parse.urlsplit(url).netloc}; retrying in {wait:.0f} s")
            self.sleep(wait)


class RateLimit:
    """Spaces calls evenly so that no more than ``per_hour`` start in any hour."""

    def __init__(self, per_hour: float = CALLS_PER_HOUR, clock=time.monotonic, sleep=time.sleep):
        self.interval, self.clock, self.sleep = 3600 / per_hour, clock, sleep
        self.next_call = None

    def wait(self) -> None:
        now = self.clock()
        if self.next_call is not None and now < self.next_call:
            self.sleep(self.next_call - now)
            now = self.next_call
        self.next_call = now + self.interval


@dataclass(frozen=True)
class License:
    id: int
    name: str
    url: str


@dataclass(frozen=True)
class Photo:
    """One search result, with its largest downloadable size."""

    id: str
    owner: str
    owner_name: str
    title: str
    license: int
    url: str
    width: int
    height: int

    @property
    def page_url(self) -> str:
        return f"https://www.flickr.com/photos/{self.owner}/{self.id}"

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def suffix(self) -> str:
        suffix = Path(urllib.parse.urlsplit(self.url).path).suffix.lower()
        return suffix if suffix in (".jpg", ".jpeg", ".png") else ".jpg"  # decoders go by content


def largest_size(entry: dict) -> tuple[str, int, int] | None:
    """(url, width, height) of the largest size a search result lists, None when it lists none."""
    sizes = [(entry[f"url_{s}"], int(entry[f"width_{s}"]), int(entry[f"height_{s}"]))
             for s in SIZES if entry.get(f"url_{s}") and entry.get(f"width_{s}") and entry.get(f"height_{s}")]
    return max(sizes, key=lambda size: size[1] * size[2], default=None)


@dataclass(frozen=True)
class SearchPage:
    photos: list[Photo]
    page: int
    pages: int
    unlisted: int  # results without any downloadable size


class FlickrClient:
    """The API methods srfp uses: flickr.photos.licenses.getInfo and flickr.photos.search."""

    def __init__(self, key: str, endpoint: str | None = None, http: Http | None = None,
                 rate: RateLimit | None = None):
        self.key, self.endpoint = key, endpoint or api_url()
        self.http = http or Http(key)
        self.rate = rate or RateLimit()

    def call(self, method: str, **params) -> dict:
        query = urllib.parse.urlencode({"method": method, "api_key": self.key, "format": "json",
                                        "nojsoncallback": 1, **params})
        self.rate.wait()
        body = self.http.get(f"{self.endpoint}?{query}")
        try:
            answer = json.loads(body)
        except ValueError:
            raise FlickrError(self.http.redact(f"{method}: the answer of {self.endpoint} is not JSON: {body[:200]!r}")) from None
        if answer.get("stat") != "ok":
            message = self.http.redact(str(answer.get("message", answer)))
            hint = f"; check the key, or get one at {KEY_PAGE}" if answer.get("code") in (100, "100") else ""
            raise FlickrError(f"{method} failed: {message} (Flickr error {answer.get('code')}){hint}")
        return answer

    def licenses(self) -> dict[int, License]:
        entries = self.call("flickr.photos.licenses.getInfo")["licenses"]["license"]
        return {int(e["id"]): License(int(e["id"]), e["name"], e.get("url", "")) for e in entries}

    def search(self, tag: str, licenses: tuple[int, ...], page: int, per_page: int) -> SearchPage:
        """One page of public photos tagged ``tag`` under ``licenses``, most relevant first."""
        extras = ",".join(["license", "owner_name", *(f"url_{s}" for s in SIZES)])
        answer = self.call("flickr.photos.search", tags=tag, license=",".join(map(str, licenses)), extras=extras,
                           media="photos", content_type=1, sort="relevance", per_page=per_page, page=page)["photos"]
        photos, unlisted = [], 0
        for entry in answer["photo"]:
            size = largest_size(entry)
            if size is None:
                unlisted += 1
                continue
            photos.append(Photo(str(entry["id"]), entry["owner"], entry.get("ownername", ""), entry.get("title", ""),
                                int(entry["license"]), *size))
        return SearchPage(photos, int(answer["page"]), int(answer["pages"]), unlisted)
