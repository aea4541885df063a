"""A run's storage root: a local folder or ``s3://bucket/prefix``, behind one small interface.

Every stage reads and writes through :class:`Storage`, with paths relative to the root, so the same
command runs on a laptop and on a cluster. S3 honours the standard AWS settings: credentials from the
usual chain (environment, profile, instance profile), ``AWS_REGION``/``AWS_DEFAULT_REGION``, and an
endpoint override from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible server).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from srfp.errors import UserError

#: Temporaries older than this (seconds) are left by killed writes: no write of srfp takes so long.
STALE_TEMPORARY_S = 3600


class StorageError(UserError, RuntimeError):
    """A storage root that cannot be used; the message says what to set. It never contains secrets."""


@dataclass(frozen=True)
class S3Settings:
    """The AWS settings in effect, read from the environment (credentials stay with the AWS SDK)."""

    region: str | None
    endpoint: str | None

    @classmethod
    def from_env(cls) -> "S3Settings":
        return cls(region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                   endpoint=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))

    def filesystem(self) -> pafs.S3FileSystem:
        options: dict = {"region": self.region} if self.region else {}
        if self.endpoint:
            endpoint = urlparse(self.endpoint)
            if not endpoint.scheme or not endpoint.netloc:
                raise StorageError(f"AWS_ENDPOINT_URL {self.endpoint!r} is not a URL like http://127.0.0.1:9000")
            options.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
        return pafs.S3FileSystem(**options)

    def client(self):
        """A boto3 S3 client with the same settings, for what pyarrow cannot send (a conditional put)."""
        import boto3

        return boto3.client("s3", region_name=self.region, endpoint_url=self.endpoint)


def require_credentials(uri: str) -> None:
    """Fail early, and say what to set, when the AWS credential chain has no credentials at all."""
    import boto3

    if boto3.Session().get_credentials() is None:
        raise StorageError(f"{uri}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                           "or AWS_PROFILE, or run on an instance with an instance profile")


#: The start of the name of a folder of moved credentials, followed by the process id of its command.
_CREDENTIALS_FOLDER = "srfp-aws-"
#: The AWS credential variables, with their names in a credentials file.
_CREDENTIAL_VARIABLES = {"AWS_ACCESS_KEY_ID": "aws_access_key_id", "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
                         "AWS_SESSION_TOKEN": "aws_session_token", "AWS_SECURITY_TOKEN": "aws_session_token"}


@contextmanager
def credentials_out_of_environment():
    """Move AWS credentials given as environment variables, for the duration, into a credentials file that only
    this user can read (a new temporary folder of mode 0700), named by ``AWS_SHARED_CREDENTIALS_FILE``.

    Ray Tune copies the credential variables into every trial's runtime environment, and Ray's runtime-env
    agent writes that in plain text into its log, world-readable, on every node. Out of the environment, the
    credentials reach no Ray log; this process and a local Ray's workers (which inherit the file's name) read
    them from the file, through the usual credential chain. Workers on other nodes use their node's own
    credentials (an instance profile). The file is deleted and the variables restored on the way out; the
    folders of killed commands are deleted on the way in.
    """
    _remove_credentials_of_killed_commands()
    moved = {name: os.environ.pop(name) for name in _CREDENTIAL_VARIABLES if name in os.environ}
    if not moved:
        yield
        return
    previous_file = os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
    try:
        with tempfile.TemporaryDirectory(prefix=f"{_CREDENTIALS_FOLDER}{os.getpid()}-") as folder:
            path = os.path.join(folder, "credentials")
            lines = [f"[{os.environ.get('AWS_PROFILE', 'default')}]",
                     *(f"{_CREDENTIAL_VARIABLES[name]} = {value}" for name, value in moved.items())]
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write("\n".join(lines) + "\n")
            os.environ["AWS_SHARED_CREDENTIALS_FILE"] = path
            yield
    finally:
        os.environ.update(moved)
        if previous_file is None:
            os.environ.pop("AWS_SHARED_CREDENTIALS_FILE", None)
        else:
            os.environ["AWS_SHARED_CREDENTIALS_FILE"] = previous_file


def _remove_credentials_of_killed_commands() -> None:
    """Delete this user's folders of moved credentials whose command is no longer running (killed with SIGKILL)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_CREDENTIALS_FOLDER}*-*"):
        pid = folder.name.removeprefix(_CREDENTIALS_FOLDER).split("-")[0]
        try:
            if pid.isdigit() and folder.stat().st_uid == os.getuid() and not process_running(int(pid)):
                shutil.rmtree(folder)
        except OSError:  # another command removed it first
            pass


def process_running(pid: int) -> bool:
    """Whether a process of this id runs on this machine (in this process id namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_remote(uri: str) -> bool:
    return urlparse(str(uri)).scheme == "s3"


def node_cache(name: str) -> Path:
    """A folder of this node's local cache (derived data kept between runs; deleting it is always safe):
    ``$SRFP_CACHE/<name>``, by default ``~/.cache/srfp/<name>``. Resolved where it is used, on each node."""
    return Path(os.environ.get("SRFP_CACHE", Path.home() / ".cache" / "srfp")) / name


#: Words in the AWS SDK's error messages, and what they mean for the user.
_S3_CAUSES = (
    (("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId", "SIGNATURE_DOES_NOT_MATCH",
      "SignatureDoesNotMatch", "credentials", "403"),
     "access denied. Check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance "
     "profile) and AWS_ENDPOINT_URL for an S3-compatible server"),
    (("NO_SUCH_BUCKET", "NoSuchBucket"), "the bucket does not exist at {endpoint}; create it, or check the name "
                                         "and AWS_ENDPOINT_URL"),
    (("NETWORK_CONNECTION", "curlCode"), "cannot reach the S3 endpoint {endpoint}; check AWS_ENDPOINT_URL and the "
                                         "network"),
)


def _local_cause(error: OSError) -> str | None:
    """The operating system's words for a local error (pyarrow's messages repeat the path around them)."""
    return os.strerror(error.errno) if error.errno else error.strerror


def _write_synced(path: str, data: bytes) -> None:
    """Write a new local file and flush it to the disk."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class Storage:
    """Files under a root URI. Paths given to its methods are relative, with ``/`` separators."""

    def __init__(self, root: str | Path):
        self.uri = str(root)
        if is_remote(self.uri):
            parsed = urlparse(self.uri)
            if not parsed.netloc:
                raise StorageError(f"{self.uri!r} has no bucket; expected s3://bucket/prefix")
            if "@" in parsed.netloc:
                raise StorageError("an s3:// root must not hold credentials; use the AWS environment variables, "
                                   "AWS_PROFILE or an instance profile")
            self.settings = S3Settings.from_env()
            self.fs, self.endpoint = self.settings.filesystem(), self.settings.endpoint
            require_credentials(self.uri)
            self.base = posixpath.join(parsed.netloc, parsed.path.strip("/")).rstrip("/")
        else:
            if "://" in self.uri:
                raise StorageError(f"{self.uri!r}: unsupported storage; use a local folder or s3://bucket/prefix")
            local = Path(self.uri).expanduser().resolve()
            self.uri = local.as_posix()  # absolute: Ray workers run in other working directories
            self.fs, self.endpoint = pafs.LocalFileSystem(), None
            self.base = self.uri

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    @property
    def remote(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    def path(self, *parts: str) -> str:
        """The filesystem path (no scheme) of a relative path, as pyarrow and Ray Data take it."""
        return posixpath.join(self.base, *parts) if parts else self.base

    def uri_of(self, *parts: str) -> str:
        """A full URI (``s3://bucket/...`` or an absolute local path) for tools that take URIs."""
        path = self.path(*parts)
        return f"s3://{path}" if self.remote else path

    def _call(self, action: str, relative: str, function, *args):
        try:
            return function(*args)
        except OSError as error:
            cause = self._s3_cause(error) if self.remote else None
            if cause:
                raise StorageError(f"cannot {action} {self.uri_of(relative)}: {cause}") from None
            raise

    def _s3_cause(self, error: OSError) -> str | None:
        """What an S3 error means for the user, for the faults they can fix; None for the others."""
        message = str(error)
        for words, cause in _S3_CAUSES:  # whole words: an endpoint's port 59403 is no HTTP 403
            if any(re.search(rf"\b{word}\b", message) for word in words):
                return cause.format(endpoint=self.endpoint or "AWS's endpoint")
        return None

    def check(self, writable: bool = True) -> None:
        """Fail before any work, with one error naming the root and the cause, when the root cannot be read
        (or, ``writable``, written): a file in its place, a read-only folder, a missing bucket, an S3 endpoint
        that does not answer. Writing is shown by writing and deleting a small probe file at the root (its
        name holds ``.tmp-``, so listings skip it even if a killed run leaves it behind)."""
        self._checked("read", self._read_root)
        if writable:
            self._checked("write", self._write_probe)

    def _checked(self, action: str, function) -> None:
        try:
            function()
        except OSError as error:
            cause = self._s3_cause(error) if self.remote else _local_cause(error)
            raise StorageError(f"cannot {action} the storage root {self.uri}: {cause or error}") from None

    def _read_root(self) -> None:
        if self.remote:
            bucket = self.base.split("/", 1)[0]
            if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:  # HeadBucket says so, not an error
                raise FileNotFoundError(f"NoSuchBucket: {bucket}")
        elif self.fs.get_file_info(self.base).type == pafs.FileType.File:
            raise StorageError(f"cannot read the storage root {self.uri}: it is a file, not a folder")
        self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))

    def _write_probe(self) -> None:
        probe = self.path(f".write-probe.tmp-{uuid.uuid4().hex}")
        if not self.remote:
            self.fs.create_dir(self.base, recursive=True)
        with self.fs.open_output_stream(probe) as stream:
            stream.write(b"srfp")
        self.fs.delete_file(probe)

    def exists(self, relative: str) -> bool:
        info = self._call("read", relative, self.fs.get_file_info, self.path(relative))
        return info.type != pafs.FileType.NotFound

    def is_file(self, relative: str) -> bool:
        info = self._call("read", relative, self.fs.get_file_info, self.path(relative))
        return info.type == pafs.FileType.File

    def read_bytes(self, relative: str) -> bytes:
        def read():
            with self.fs.open_input_stream(self.path(relative)) as stream:
                return stream.readall()

        return self._call("read", relative, read)

    def read_text(self, relative: str) -> str:
        return self.read_bytes(relative).decode("utf-8")

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write a file atomically: readers see the old content or the whole new one, never a part.

        A temporary file (or S3 key) beside the target, then a rename (an S3 server-side move).
        """
        target = self.path(relative)

        temporary = f"{target}.tmp-{uuid.uuid4().hex}"

        def write():
            if self.remote:  # an upload cut short may still complete: it lands on the temporary key
                try:
                    with self.fs.open_output_stream(temporary) as stream:
                        stream.write(data)
                    self.fs.move(temporary, target)
                finally:
                    if self.fs.get_file_info(temporary).type == pafs.FileType.File:
                        self.fs.delete_file(temporary)
                return
            self.fs.create_dir(posixpath.dirname(target), recursive=True)
            try:
                _write_synced(temporary, data)
                os.replace(temporary, target)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)

        self._call("write", relative, write)

    def write_text(self, relative: str, text: str) -> None:
        self.write_bytes(relative, text.encode("utf-8"))

    def create_exclusive(self, relative: str, data: bytes) -> bool:
        """Create a file only if none is there, atomically: of two callers, exactly one gets True. Readers see
        the whole content or no file. Local: a hard link of a complete temporary file (fails if the name
        exists). S3: a PUT with ``If-None-Match: *``, which AWS S3 and MinIO honour (a server that ignores the
        header would let both succeed)."""
        target = self.path(relative)

        def create_local() -> bool:
            self.fs.create_dir(posixpath.dirname(target), recursive=True)
            temporary = f"{target}.tmp-{uuid.uuid4().hex}"
            try:
                _write_synced(temporary, data)
                os.link(temporary, target)
                return True
            except FileExistsError:
                return False
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)

        def create_remote() -> bool:
            from botocore.exceptions import ClientError

            bucket, key = target.split("/", 1)
            try:
                self.settings.client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except ClientError as error:
                if error.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                raise OSError(str(error)) from None  # named by _call, as pyarrow's errors are

        return self._call("write", relative, create_remote if self.remote else create_local)

    def _entries(self, relative: str, recursive: bool, kind: pafs.FileType) -> list[str]:
        selector = pafs.FileSelector(self.path(relative), recursive=recursive, allow_not_found=True)
        infos = self._call("list", relative, self.fs.get_file_info, selector)
        prefix = self.base + "/"
        return sorted(info.path.removeprefix(prefix) for info in infos if info.type == kind and ".tmp-" not in info.path)

    def list(self, relative: str = "", recursive: bool = False) -> list[str]:
        """Relative paths of the files under a folder (empty when it does not exist), sorted."""
        return self._entries(relative, recursive, pafs.FileType.File)

    def list_dirs(self, relative: str = "") -> list[str]:
        """Relative paths of the immediate sub-folders of a folder, sorted."""
        return self._entries(relative, False, pafs.FileType.Directory)

    def remove_stale_temporaries(self, relative: str, older_than_s: float = STALE_TEMPORARY_S) -> int:
        """Delete the temporaries (``.tmp-`` in their names) under a folder that killed writes left behind, those
        last changed over ``older_than_s`` ago, so that a write still running is not harmed; returns how many."""
        selector = pafs.FileSelector(self.path(relative), recursive=True, allow_not_found=True)
        infos = self._call("list", relative, self.fs.get_file_info, selector)
        oldest = time.time() - older_than_s
        stale = [info.path for info in infos if info.type == pafs.FileType.File and ".tmp-" in info.path
                 and info.mtime is not None and info.mtime.timestamp() < oldest]
        for path in stale:
            self._call("delete", relative, self.fs.delete_file, path)
        return len(stale)

    def delete(self, relative: str) -> None:
        """Delete a file or a whole folder; nothing happens if it does not exist."""
        info = self._call("read", relative, self.fs.get_file_info, self.path(relative))
        if info.type == pafs.FileType.Directory:
            self._call("delete", relative, self.fs.delete_dir, self.path(relative))
        elif info.type == pafs.FileType.File:
            self._call("delete", relative, self.fs.delete_file, self.path(relative))
