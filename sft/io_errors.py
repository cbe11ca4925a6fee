"""Storage failures (disk full, read-only or unwritable run_dir) as one line and exit code 74.

Writers report a full disk in several ways: an OSError with errno ENOSPC, a library error
(safetensors) whose text carries the OS message, or one that does not (torch's zip writer says
"iostream error"). `storage_failure` finds the first two in an exception or its causes, and
for any other error checks whether the run_dir's file system has run out of space; it words
what it found; the trainer then frees its half-written
checkpoint, writes summary.json if it can, and exits 74 (EX_IOERR). Committed checkpoints are
never touched: a checkpoint is only renamed into place after all its files are written.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

EXIT_IO = 74  # EX_IOERR from sysexits.h
ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
TEXTS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
}


LOW_SPACE = 1 << 20  # bytes free below which a failed write is taken for a full disk


def _free_bytes(run_dir: str) -> int | None:
    p = Path(run_dir)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def storage_failure(exc: BaseException, run_dir: str = "") -> tuple[str, str] | None:
    """(what went wrong, the path if known) when `exc` is a storage failure, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in ERRNOS:
            return ERRNOS[seen.errno], str(seen.filename or "")
        for text, code in TEXTS.items():
            if text in str(seen):
                return ERRNOS[code], ""
        seen = seen.__cause__ or seen.__context__
    free = _free_bytes(run_dir) if run_dir else None
    if (
        free is not None
        and free < LOW_SPACE
        and not isinstance(exc, (MemoryError, KeyboardInterrupt))
    ):
        return ERRNOS[errno.ENOSPC], f"{free:,} bytes free"
    return None


def failure_line(what: str, path: str, run_dir: str) -> str:
    where = f" ({path})" if path else ""
    return (
        f"cannot write to run_dir {run_dir}: {what}{where}; the last committed checkpoint is "
        "intact: free space or fix the permissions and rerun the same command to resume, or "
        "choose another run_dir"
    )
