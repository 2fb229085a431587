"""The workdir lock: one training process at a time in a workdir.

A training run holds an exclusive ``flock`` on ``WORKDIR/.lock`` from the
moment its workdir is opened (``loop.open_workdir``) until it ends, and writes
its pid, host and start time into the file. A second run on the same workdir
gets a ``WorkdirError`` naming the holder, before it loads data or compiles.

The kernel releases the lock when its process dies, even on SIGKILL; the file
then still names the dead process, and the next run takes the lock over and
logs that it did. A clean release empties the file, so that a non-empty file
found unlocked always means a holder that died.

The lock is per process and re-entrant: taking it again in the process that
holds it is a no-op. ``scoped`` marks a function (a trainer's entry point)
whose call releases every lock taken inside it, however it ends.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import functools
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from vae_jax.workdir import WorkdirError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"

_held: dict[Path, int] = {}   # resolved workdir -> the open file descriptor holding its flock
_scopes: list[list[Path]] = []  # the locks taken inside each active ``scope``, innermost last
_mutex = threading.RLock()


def _key(workdir: str | Path) -> Path:
  return Path(workdir).resolve()


def _read(fd: int) -> dict | None:
  """The holder recorded in an open lock file, or None when it is empty or unreadable."""
  try:
    text = os.pread(fd, 4096, 0).decode()
    return json.loads(text) if text.strip() else None
  except (OSError, ValueError):
    return None


def describe(holder: dict | None) -> str:
  """'pid 123 on host since 2024-05-01 12:00:00' for a recorded holder."""
  if not holder:
    return "another process (which has not yet written its pid)"
  return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"


def holder(workdir: str | Path) -> dict | None:
  """{"pid", "host", "since"} of the process recorded in ``workdir``'s lock file, or None
  (no file, an empty one). Says nothing of whether that process still runs."""
  path = Path(workdir) / LOCK_FILE
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return None
  try:
    return _read(fd)
  finally:
    os.close(fd)


def acquire(workdir: str | Path) -> bool:
  """Takes ``workdir``'s lock for this process; -> True if taken now, False if already held here.

  Raises WorkdirError naming the holder when another live process holds it.
  A lock left by a process that died is taken over, with a warning. On a
  filesystem without ``flock`` the run goes on unlocked, with a warning.
  """
  key = _key(workdir)
  with _mutex:
    if key in _held:
      return False
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        os.close(fd)
        log.warning("%s cannot be locked (%s): nothing stops a second run from using it at the "
                    "same time", workdir, e.strerror or e)
        return False
      found = _read(fd)
      for _ in range(20):  # the holder may be between taking the lock and writing its pid
        if found:
          break
        time.sleep(0.05)
        found = _read(fd)
      os.close(fd)
      raise WorkdirError(f"workdir {workdir} is in use by {describe(found)}; wait for it or use "
                         "another --workdir") from None
    previous = _read(fd)
    if previous:
      log.warning("took over the lock of %s left by %s: that process ended without releasing it",
                  workdir, describe(previous))
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": datetime.datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    _held[key] = fd
    if _scopes:
      _scopes[-1].append(key)
    return True


def release(workdir: str | Path) -> None:
  """Releases ``workdir``'s lock if this process holds it (and empties the file)."""
  with _mutex:
    fd = _held.pop(_key(workdir), None)
    if fd is None:
      return
    try:
      os.ftruncate(fd, 0)
    except OSError:
      pass
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)


def is_held(workdir: str | Path) -> bool:
  """Whether this process holds ``workdir``'s lock."""
  return _key(workdir) in _held


def in_scope() -> bool:
  """Whether a ``scope`` (a ``scoped`` call) is active."""
  return bool(_scopes)


@contextlib.contextmanager
def scope():
  """The locks taken inside the ``with`` block are released when it ends, however it ends."""
  taken: list[Path] = []
  with _mutex:
    _scopes.append(taken)
  try:
    yield
  finally:
    with _mutex:
      del _scopes[next(i for i, s in enumerate(_scopes) if s is taken)]
      for key in taken:
        release(key)


def scoped(fn: Callable) -> Callable:
  """``fn`` run inside a ``scope``: a trainer's entry point, which takes its workdir's lock
  first thing (``loop.open_workdir``) and must release it on every exit path."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with scope():
      return fn(*args, **kwargs)
  return wrapper
