"""Writing files so that a crash never leaves a half-written one."""
import os
import tempfile


def atomic_write(path, write):
    """Call `write(binary file)` on a temporary file beside `path`, flush it to disk, then rename it
    over `path`: a crash at any point leaves either the old file or the new one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes it private (0600)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
