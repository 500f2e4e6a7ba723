"""Capture files: the feature tensors a server received, byte for byte, for audits.

A capture holds each accepted request body exactly as it crossed the network (an int8 request is
audited as the int8 tensor the cloud saw), one self-checking frame per request
(:mod:`splitveil.serve.capture_format`; read back by :mod:`splitveil.serve.capture_reader`). The
writer keeps one rule: **a frame is only ever written right after a whole frame**, so the file is
readable up to its last whole frame whatever happens to the server or the disk:

* each frame goes out in one positioned write at the end of the last whole frame; a write that
  fails part-way (disk full, file too large, I/O error) is cut off again with ``ftruncate`` before
  the error is raised, and the next write cuts it first if that failed too;
* at open, a tail holding no whole frame (a server killed mid-write) is cut off and logged before
  anything is appended; corrupt bytes between whole frames are left for readers to report;
* with ``max_bytes``, a frame that would take a file past it starts the next numbered file
  (``cap.svcap``, ``cap.1.svcap``, ``cap.2.svcap``, ...); with ``max_files`` too, writes fail once
  that many files exist, and the server refuses or skips as ``--capture-errors`` says.

Frames reach the operating system before the request is answered, without an fsync each: a killed
server loses no frame it answered; a power cut may lose the newest frames, never the file's prefix.
An exclusive lock keeps a second server from writing to the same capture.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

from splitveil.errors import ConfigError, SplitveilError
from splitveil.serve.capture_format import HEADER, MAGIC, MAGIC_SIZE, MAGIC_V1, MAX_BODY, frame_header, rotated_path
from splitveil.serve.capture_reader import (
    CaptureReader,
    Frame,
    capture_rotations,
    iter_capture,
    read_capture,
    scan_capture_file,
)

# Reading lives in capture_reader; re-exported so existing `splitveil.serve.capture` imports keep working.
__all__ = ["CaptureError", "CaptureReader", "CaptureWriter", "iter_capture", "read_capture"]

log = logging.getLogger(__name__)


class CaptureError(SplitveilError):
    """A capture file cannot be opened or written. ``cause`` names why in a word (``ENOSPC``, ``full``)."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class CaptureWriter:
    """Appends request bodies to the capture at ``path`` as whole frames only (see the module docstring)."""

    def __init__(self, path: str | Path, *, max_bytes: int | None = None, max_files: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ConfigError(f"capture max_bytes must be at least 1, got {max_bytes}")
        if max_files is not None and (max_files < 1 or max_bytes is None):
            raise ConfigError("capture max_files needs max_bytes (the size at which files rotate) and must be >= 1")
        self.base = Path(path)
        self.max_bytes, self.max_files = max_bytes, max_files
        self.frames = 0  # written by this writer
        try:
            self.base.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CaptureError(
                f"cannot create the directory of capture file {self.base}: {exc.strerror}; choose another path",
                _cause(exc),
            ) from None
        rotations = capture_rotations(self.base) if not self.base.is_dir() else []
        self.index = rotations[-1][0] if rotations else 0
        self.path = rotated_path(self.base, self.index)
        self._fd, self._end = _open_for_append(self.path)
        self._dirty = False  # bytes past _end that a failed write left and no truncation has removed yet

    def write(self, body: bytes) -> None:
        """Append ``body`` as one frame, or raise :class:`CaptureError` and leave the file as it was."""
        if len(body) > MAX_BODY:
            raise CaptureError(f"a {len(body)}-byte request is too large for a capture frame", "EFBIG")
        self._cut_failed_write()
        size = HEADER.size + len(body)
        if self._needs_new_file(size):
            self._rotate()
        try:
            _write_all(self._fd, frame_header(body), body, self._end)
        except OSError as exc:
            self._dirty = True
            with contextlib.suppress(CaptureError):
                self._cut_failed_write()
            raise CaptureError(f"cannot write to capture file {self.path}: {exc.strerror}", _cause(exc)) from None
        self._end += size
        self.frames += 1

    def probe(self, size: int) -> None:
        """Raise :class:`CaptureError` unless a ``size``-byte frame could be written now. Writes nothing.

        Space is reserved with ``posix_fallocate`` and released at once, so a full disk, a file-size
        limit or a failing device shows here as it would in :meth:`write`.
        """
        self._cut_failed_write()
        if self._needs_new_file(size) and self.max_files is not None:
            self._refuse_if_full()
        self._dirty = True  # a reader may briefly see the reserved zeros as a torn tail
        try:
            os.posix_fallocate(self._fd, self._end, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no way to probe: the next write will tell
                raise CaptureError(f"cannot write to capture file {self.path}: {exc.strerror}", _cause(exc)) from None
        finally:
            with contextlib.suppress(CaptureError):
                self._cut_failed_write()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _needs_new_file(self, frame_size: int) -> bool:
        # A file holding no frame takes any frame, so one larger than max_bytes still has a home.
        return self.max_bytes is not None and self._end + frame_size > self.max_bytes and self._end > MAGIC_SIZE

    def _refuse_if_full(self) -> None:
        files = len(capture_rotations(self.base))
        if self.max_files is not None and files >= self.max_files:
            raise CaptureError(
                f"capture {self.base} is full: {files} files of up to {self.max_bytes} bytes "
                "(--capture-max-files); archive the numbered files or raise the limit",
                "full",
            )

    def _rotate(self) -> None:
        self._refuse_if_full()
        newest = max([self.index, *(index for index, _ in capture_rotations(self.base))])
        path = rotated_path(self.base, newest + 1)
        fd, end = _open_for_append(path)
        os.close(self._fd)
        self._fd, self._end, self.path, self.index = fd, end, path, newest + 1
        log.info("capture continues in %s", path)

    def _cut_failed_write(self) -> None:
        if not self._dirty:
            return
        try:
            os.ftruncate(self._fd, self._end)
        except OSError as exc:
            raise CaptureError(
                f"cannot cut a failed write off capture file {self.path}: {exc.strerror}", _cause(exc)
            ) from None
        self._dirty = False


def _open_for_append(path: Path) -> tuple[int, int]:
    """An open, locked descriptor of ``path`` and the end of its last whole frame (a new file gets its magic)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise CaptureError(
            f"cannot open capture file {path}: {exc.strerror}; choose another path", _cause(exc)
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CaptureError(
                f"capture file {path} is being written by another process; give each server its own capture file",
                "locked",
            ) from None
        return fd, _whole_frames_end(fd, path)
    except BaseException:
        os.close(fd)
        raise


def _whole_frames_end(fd: int, path: Path) -> int:
    """Where the last whole frame of ``path`` ends, after cutting off any tail that holds none."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, MAGIC_SIZE, 0)
    if len(head) < MAGIC_SIZE and MAGIC.startswith(head):  # new, or its creator died writing the magic line
        try:
            os.ftruncate(fd, 0)
            _write_all(fd, MAGIC, b"", 0)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)  # an empty file would only confuse the numbering of rotations
            raise CaptureError(
                f"cannot write capture file {path}: {exc.strerror}; free space or choose another path", _cause(exc)
            ) from None
        return MAGIC_SIZE
    if head == MAGIC_V1:
        raise CaptureError(
            f"{path} is an SVCAP1 capture (the older format without checksums), which is read but not appended to; "
            "move it aside or choose another capture path",
            "format",
        )
    if head != MAGIC:
        raise CaptureError(f"{path} exists and is not a capture file; choose another path", "format")
    end, corrupt = MAGIC_SIZE, 0
    for item in scan_capture_file(path):
        if isinstance(item, Frame):
            end = item.end
        elif item.kind == "corrupt frame":
            corrupt += item.size
    if corrupt:
        log.warning("%s holds %d corrupt bytes between whole frames; readers skip and report them", path, corrupt)
    if end < size:
        try:
            os.ftruncate(fd, end)
        except OSError as exc:
            raise CaptureError(f"cannot repair capture file {path}: {exc.strerror}", _cause(exc)) from None
        log.warning(
            "%s: cut off %d bytes after its last whole frame (byte %d), a frame the previous server did not "
            "finish; new frames follow the whole ones",
            path,
            size - end,
            end,
        )
    return end


def _write_all(fd: int, header: bytes, body: bytes, offset: int) -> None:
    """Write ``header + body`` at ``offset``: one system call unless the disk takes only part of it."""
    total = len(header) + len(body)
    written = os.pwritev(fd, [header, body], offset)
    if written == total:
        return
    rest = memoryview(header + body)[written:]
    while rest:
        count = os.pwrite(fd, rest, offset + total - len(rest))
        if count == 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        rest = rest[count:]


def _cause(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "OSError")
