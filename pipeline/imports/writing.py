"""Placing one import batch in the landing zone: its name, and its four files at once.

README "Dropping your own files": files are named so that sorting the names
sorts the batches, and each is written under a name starting with `.` and
renamed into place. An import's batch is called `batch-NNNNNN_import` (NNNNNN
one past the highest batch number in the landing zone) unless `--batch` names
it: it sorts after every existing batch both as a batch id and as a file name
(`_` sorts after `.`), and it can never be a name the demo generator will
write later (`batch-NNNNNN`), so an appended demo batch never overwrites an
import. The four files are renamed into place while holding the lake's run
lock, so a pipeline run sees all of the batch or none of it.

The report and the rejected lines are kept beside the batch in
`landing/_imports/` (readers skip names starting with `_`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline import storage
from pipeline.config import settings
from pipeline.contract import SOURCES
from pipeline.sources.contract import FILE_SUFFIX
from pipeline.sources.model import batch_name

IMPORT_SUFFIX = "_import"
REPORT_DIR = "_imports"
_BATCH_NUMBER = re.compile(r"^batch-(\d+)")
_VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class BatchError(ValueError):
    """The batch cannot be placed (its name, or the lake is busy)."""


def existing_batches(landing: str) -> list[str]:
    """The batch ids of every landing file (the part of its name before the first dot)."""
    ids = set()
    for source in SOURCES:
        for file in storage.list_files(storage.join(landing, source)):
            ids.add(file.name.split(".")[0])
    return sorted(ids)


def choose_batch(landing: str, requested: str | None) -> str:
    """`requested`, checked; or the next `batch-NNNNNN_import`."""
    existing = existing_batches(landing)
    if requested is None:
        numbers = [int(m.group(1)) for b in existing if (m := _BATCH_NUMBER.match(b))]
        name = batch_name(max(numbers, default=0) + 1) + IMPORT_SUFFIX
    else:
        name = requested
        if not _VALID_NAME.match(name):
            raise BatchError(
                f"batch name {name!r}: use letters, digits, '-' and '_' (no dot), "
                "not starting with '_' or '-'"
            )
    if name in existing:
        raise BatchError(f"batch {name} already exists in {landing}")
    later = [b for b in existing if b >= name]
    if later:
        raise BatchError(
            f"batch name {name!r} must sort after every existing batch, and {later[-1]!r} "
            "does not sort before it (the later batch wins ties between versions)"
        )
    return name


def landing_file(batch: str, source: str) -> str:
    return f"{batch}.{FILE_SUFFIX[source]}"


class Staging:
    """Where the batch's files are written before they are placed.

    A local lake: hidden files (`.<name>.tmp`) in the source folders themselves,
    renamed into place (atomic on one file system). A lake at a URL: a local
    temporary folder copied up file by file (an object store shows an object
    only once it is complete).
    """

    def __init__(self, batch: str) -> None:
        self.batch = batch
        self.landing = settings().landing
        local = storage.local_path(self.landing)
        self._temp = (
            None if local is not None else Path(tempfile.mkdtemp(prefix="shoplake-import-"))
        )
        self.root = local if local is not None else self._temp / "landing"  # type: ignore[operator]
        self.work = Path(tempfile.mkdtemp(prefix=f".{batch}-", dir=self._work_parent()))
        self.pending: list[tuple[Path, Path]] = []
        self.token = uuid.uuid4().hex[:8]

    def _work_parent(self) -> Path:
        parent = self.root / REPORT_DIR
        parent.mkdir(parents=True, exist_ok=True)
        return parent

    def hidden(self, folder: str, name: str) -> Path:
        """A hidden path that `place` renames to folder/name."""
        target = self.root / folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.{self.token}.tmp")  # two imports never share one
        self.pending.append((tmp, target))
        return tmp

    def place(self, wait_seconds: float, tell: Callable[[str, float], None]) -> None:
        """Rename every hidden file into place, data files under the run lock."""
        for tmp, _ in self.pending:
            if not tmp.exists():
                raise BatchError(f"{tmp} was not written")
        with _run_lock(wait_seconds, tell):
            for _, target in self.pending:
                if target.exists():
                    raise BatchError(f"{target} already exists; nothing was placed")
            for tmp, target in self.pending:
                os.replace(tmp, target)
        if self._temp is not None:
            shutil.rmtree(self.work, ignore_errors=True)  # not part of the batch
            storage.copy_tree(self.root, self.landing)

    def cleanup(self) -> None:
        for tmp, _ in self.pending:
            tmp.unlink(missing_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)

    def location(self, folder: str, name: str) -> str:
        return storage.join(self.landing, folder, name)


@contextmanager
def _run_lock(wait_seconds: float, tell: Callable[[str, float], None]) -> Iterator[None]:
    """The lake's run lock, waiting for a running pipeline run to finish."""
    from pipeline.runner import RunInProgressError, run_lock

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            with run_lock():
                yield
            return
        except RunInProgressError as exc:
            if time.monotonic() >= deadline:
                raise BatchError(
                    f"a pipeline run held the lake for {wait_seconds:.0f}s; nothing was placed"
                ) from exc
            tell("waiting for the pipeline run on this lake to finish", 0.97)
            time.sleep(1.0)


def save_upload(name: str, upload_id: str, data: bytes) -> Path:
    """Keep an uploaded export inside the lake root (landing/_imports/uploads).

    The file name comes from the upload's id, never from a path the visitor
    gave; only the suffix of their name is kept, and only a known one. Saved
    once per upload, under a dotted name and then renamed, so a reader never
    sees half a file. A lake at a URL has no local folder: ValueError.
    """
    from pipeline.config import settings

    suffix = Path(name).suffix.lower()
    suffix = suffix if re.fullmatch(r"\.(csv|txt|tsv|xlsx|xlsm)", suffix) else ".csv"
    folder = settings().lake_path / "landing" / REPORT_DIR / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^A-Za-z0-9]', '', str(upload_id))[:40]}{suffix}"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path
