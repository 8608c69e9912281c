"""Writing files so that a crash never leaves a half-written one and nothing is replaced by
surprise; reading files from a dataset or a run folder without following them into a FIFO or a
device, and without reading more than a stated limit.

Temporary names carry the writer's process id (`<name>.<pid>-XXXXXXXX.tmp` for `atomic_write`,
`<dest>.partial-<pid>` for the dataset tool), so `remove_stale_temporaries` can tell a killed
writer's leftovers from a live writer's work.
"""
import os
import re
import shutil
import stat
import tempfile
import time

# `<target>.<pid>-<8 random chars of mkstemp>.tmp` and `<target>.partial-<pid>`: nothing else is
# ever removed by `remove_stale_temporaries`.
_TEMP_NAME = re.compile(r'^.+\.(?P<pid>\d+)-[a-z0-9_]{8}\.tmp$|^.+\.partial-(?P<partial_pid>\d+)$')
# A leftover must also be this old: a writer on another machine sharing the folder has another pid
# namespace, and no write of this project takes an hour.
STALE_SECONDS = 3600


def atomic_write(path, write, replace=True):
    """Call `write(binary file)` on a temporary file beside `path`, flush it to disk, then move it to
    `path`: a crash at any point leaves either the old file or the new one. With `replace=False`
    an existing `path` is never replaced (FileExistsError), even one created while writing."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=f'{os.path.basename(path)}.{os.getpid()}-', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes it private (0600)
        if replace:
            os.replace(tmp_path, path)
        else:
            publish_exclusively(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def publish_exclusively(tmp_path, path):
    """Move the finished file `tmp_path` to `path` unless `path` exists (FileExistsError, `tmp_path`
    left in place). A hard link fails atomically when the name is taken; where the file system has
    no hard links, an exclusively created placeholder reserves the name first."""
    try:
        os.link(tmp_path, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FUSE file systems, FAT)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.replace(tmp_path, path)
        return
    os.remove(tmp_path)


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _writer_is_gone(pid):
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False  # a live process of another user (or a pid no process can have)
    return False


def remove_stale_temporaries(folder, min_age=STALE_SECONDS):
    """Remove the temporaries (`atomic_write`'s `*.tmp`, the dataset tool's `*.partial-<pid>`) that
    a killed writer left in `folder`: only names of those patterns whose writer process is gone and
    which were last modified over `min_age` seconds ago. Returns the removed paths."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        match = _TEMP_NAME.match(name)
        if match is None:
            continue
        path = os.path.join(folder, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        pid = int(match.group('pid') or match.group('partial_pid'))
        if now - info.st_mtime < min_age or not _writer_is_gone(pid):
            continue
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        elif stat.S_ISREG(info.st_mode):
            os.remove(path)
        else:
            continue  # a link or a special file of that name is not ours
        removed.append(path)
    return removed


class NotRegularFileError(OSError):
    """A path that names a FIFO, device, socket or folder where a regular file was expected."""


def file_kind(mode):
    """'a FIFO', 'a character device', ... for an `st_mode` that is not a regular file."""
    for test, kind in ((stat.S_ISFIFO, 'a FIFO'), (stat.S_ISCHR, 'a character device'),
                       (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket'), (stat.S_ISDIR, 'a folder')):
        if test(mode):
            return kind
    return 'not a regular file'


def open_regular_file(path):
    """Open `path` for binary reading only if it is a regular file (after following links). The
    open does not block on a FIFO and does not make a terminal ours; the check is on the opened
    descriptor, so a file swapped in after a listing is caught too."""
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_NOCTTY', 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f'it is {file_kind(mode)}, not a regular file')
        return os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise


def read_limited(file, limit, what):
    """All bytes of an open binary file, refusing (ValueError) past `limit` bytes without reading more."""
    data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f'{what} is larger than {limit} bytes, the most this project reads')
    return data
