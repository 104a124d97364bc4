"""Whether this process can write its state directory, checked once at start-up.

RocksDB opens a store only when its partition is assigned, long after start-up:
a state directory the process cannot write (a volume owned by another user, a
read-only mount) would then end the run with a Python traceback from deep in
the restore. Checked first, before anything connects, it is one line naming
the directory, the user the process runs as and what to change.
"""

from __future__ import annotations

import errno
import os
import pwd
import tempfile
from pathlib import Path

from service.config import Config
from service.errors import ConfigError

#: The configuration key the state directory comes from, which a problem names.
STATE_DIR_KEY = "app.state_dir"

#: Errors that mean "this user may not write here": the fix is ownership or a group.
_NOT_ALLOWED = (errno.EACCES, errno.EPERM)


def require_state_dir(config: Config, *, instance: bool = True) -> None:
    """Check the directory a command writes: this instance's (``run``, ``restore-state``) or the app's (``reset`` deletes it)."""
    directory = config.state_dir / config.app_id
    require_writable(directory / config.instance_id if instance else directory, config.state_dir)


def require_writable(directory: Path, state_dir: Path) -> None:
    """Create ``directory`` (below ``state_dir``) if need be and write a file in it; a ``ConfigError`` if that fails.

    ``mkdir`` succeeds on a directory that exists, whatever its mode, so a
    probe file is written and removed: that is what RocksDB will do.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".sessionizer-write-check-", dir=directory)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError([state_dir_problem(directory, state_dir, exc)]) from None


def state_dir_problem(directory: Path, state_dir: Path, error: OSError) -> str:
    """One line: the key and its value, the directory, why it cannot be written, by whom, and what to change."""
    reason = error.strerror or type(error).__name__
    user = process_user()
    return f"{STATE_DIR_KEY} = {str(state_dir)!r}: cannot write {str(directory.absolute())!r} as {user}: {reason}; {_fix(error, user)}"


def process_user() -> str:
    """``user sessionizer (uid 10001, gid 10001)``; a uid without a passwd entry (Kubernetes' runAsUser) has no name."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid} (gid {gid}, no user name)"
    return f"user {name} (uid {uid}, gid {gid})"


def _fix(error: OSError, user: str) -> str:
    """What to change, by kind of failure."""
    uid, gid = os.geteuid(), os.getegid()
    if error.errno in _NOT_ALLOWED:
        return (
            f"make it writable by uid {uid}: under Kubernetes set the pod's securityContext.fsGroup (e.g. {gid}) so the volume "
            f"is group-writable, elsewhere chown the directory or volume to {uid}:{gid}"
        )
    if error.errno == errno.EROFS:
        return (
            "the file system is mounted read-only: mount a writable volume there (under Kubernetes a volume, not readOnly, "
            "and not the container's root filesystem when readOnlyRootFilesystem is set)"
        )
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"a part of the path is a file, not a directory: set {STATE_DIR_KEY} to a directory"
    return f"set {STATE_DIR_KEY} to a directory {user} can write"
