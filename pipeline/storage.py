"""The lake root as a local folder or a URL, and the few file operations ShopLake does itself.

``SHOPLAKE_LAKE`` may be a local path or a URL (``s3a://``, ``abfss://``,
``gs://``, ``hdfs://``, ``file://``). Spark and delta-rs take such URLs as they
are, so every table, checkpoint and landing location is built here by string
joining (``join``): ``pathlib`` would turn ``s3a://bucket/x`` into
``s3a:/bucket/x``.

What ShopLake does to files outside Spark and delta-rs (list the landing
files, read a landing file's first lines, remove a batch table, copy the
generated landing files up, place the run lock) goes through this module
only. A plain path is handled with ``pathlib`` as before; a URL with
``pyarrow.fs``, not with the Hadoop FileSystem through Spark's JVM, because
these operations also run where there is no SparkSession (``generate``, the
demo reset, the run lock, the app's pages), and Bronze reads a file's first
lines as a Python stream. The price: pyarrow has its own credentials, read
from the environment as delta-rs reads them (AWS variables or an instance
role, Azure's default credential chain, Google's application default
credentials; HDFS needs libhdfs and ``CLASSPATH``), beside the
``spark.hadoop.*`` settings Spark's connectors read. ``s3a``/``s3n`` are
spelled ``s3`` for pyarrow.

The run lock cannot be a POSIX lock on object storage. A lake in a local
folder (a path or a ``file://`` URL) keeps it at ``<lake>/.run.lock``; any
other URL keeps it in a local state folder, in a file named after the URL
(``lock_file``): one run per lake per machine. Two machines writing one
remote lake are not serialised by it.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PYARROW_SCHEME = {"s3a": "s3", "s3n": "s3"}


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and bool(_URL.match(location))


def join(root: str | Path, *parts: str) -> str:
    """``root/part/...`` by string: a URL's scheme and authority stay as they are."""
    text = str(root)
    head = ""
    if match := _URL.match(text):
        authority, slash, path = text[match.end() :].partition("/")
        head, text = text[: match.end()] + authority, slash + path
    path = text.rstrip("/")
    for part in parts:
        if part := part.strip("/"):
            path = f"{path}/{part}"
    return head + path if (head or path) else "/"


def local_path(location: str | Path) -> Path | None:
    """The local folder a location names (a path or a ``file://`` URL); None for remote ones."""
    if not is_url(location):
        return Path(location)
    url = urlsplit(str(location))
    if url.scheme.lower() == "file" and url.netloc in ("", "localhost"):
        return Path(unquote(url.path))
    return None


def lock_file(location: str, name: str, state_dir: Path) -> Path:
    """Where the lock of ``location`` lives: in it when local, else in ``state_dir``."""
    local = local_path(location)
    if local is not None:
        return local / name
    slug = re.sub(r"[^A-Za-z0-9]+", "_", location)[:60].strip("_")
    digest = hashlib.sha256(location.encode()).hexdigest()[:12]
    return state_dir / f"{slug}-{digest}{name}"


def filesystem(location: str):
    """(pyarrow FileSystem, path inside it) for a URL."""
    from pyarrow import fs

    scheme, rest = location.split("://", 1)
    scheme = _PYARROW_SCHEME.get(scheme.lower(), scheme.lower())
    return fs.FileSystem.from_uri(f"{scheme}://{rest}")


@dataclass(frozen=True, order=True)
class StoredFile:
    """A file under a URL root: the name, suffix and text form Bronze uses of a Path."""

    location: str
    size: int = field(compare=False)
    mtime: float = field(compare=False)  # seconds since the epoch

    @property
    def name(self) -> str:
        return self.location.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    def __str__(self) -> str:
        return self.location


LandingFile = Path | StoredFile


def list_files(folder: str | Path) -> list[LandingFile]:
    """Files directly in ``folder`` in name order; names starting with _ or . are not data."""
    if not is_url(folder):
        local = Path(folder)
        if not local.is_dir():
            return []
        return sorted(
            p for p in local.iterdir() if p.is_file() and not p.name.startswith(("_", "."))
        )
    from pyarrow import fs

    store, path = filesystem(str(folder))
    found = store.get_file_info(fs.FileSelector(path, allow_not_found=True))
    return sorted(
        StoredFile(join(folder, f.base_name), f.size or 0, (f.mtime_ns or 0) / 1e9)
        for f in found
        if f.type == fs.FileType.File and not f.base_name.startswith(("_", "."))
    )


def size_and_mtime(file: LandingFile) -> tuple[int, float]:
    if isinstance(file, StoredFile):
        return file.size, file.mtime
    stat = file.stat()
    return stat.st_size, stat.st_mtime


class _GzipOwningSource(gzip.GzipFile):
    """A GzipFile over a stream it opened for us: closing it closes the stream too."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__(fileobj=source, mode="rb")
        self._source = source

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._source.close()


def open_binary(file: LandingFile | str, gunzip: bool = False) -> BinaryIO:
    """The file's bytes, decompressed when ``gunzip``; closing the stream closes the file."""
    if isinstance(file, Path) or not is_url(str(file)):
        return gzip.open(file, "rb") if gunzip else open(file, "rb")  # noqa: SIM115
    store, path = filesystem(str(file))
    source = store.open_input_stream(path, compression=None)
    return _GzipOwningSource(source) if gunzip else source


def remove_tree(location: str) -> bool:
    """Delete a folder (a table) and everything in it; False when there was none."""
    if not is_url(location):
        local = Path(location)
        if not local.exists():
            return False
        shutil.rmtree(local)
        return True
    from pyarrow import fs

    store, path = filesystem(location)
    if store.get_file_info(path).type != fs.FileType.Directory:
        return False
    store.delete_dir(path)
    return True


def remove_file(location: str) -> None:
    if not is_url(location):
        Path(location).unlink(missing_ok=True)
        return
    store, path = filesystem(location)
    store.delete_file(path)


def copy_tree(source: str | Path, destination: str | Path) -> None:
    """Copy every file under ``source`` to ``destination`` (either may be a URL)."""
    from pyarrow import fs

    def resolve(location: str | Path):
        if is_url(location):
            return filesystem(str(location))
        return fs.LocalFileSystem(), str(Path(location).resolve())

    src_fs, src = resolve(source)
    dst_fs, dst = resolve(destination)
    if src_fs.get_file_info(src).type != fs.FileType.Directory:
        return
    dst_fs.create_dir(dst, recursive=True)  # copy_files makes sub-folders, not the top one
    fs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)
