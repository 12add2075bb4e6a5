"""Child processes: one handle type for every subprocess the runtime, the test fixtures and the benchmarks start.

:func:`spawn` starts a command in a new session (``start_new_session``), so the child leads its own process group
(its group id is its pid) and a terminal's Ctrl-C reaches only the parent, which then stops its children in its own
order. :meth:`ChildProcess.stop` stops the whole group, so whatever the child spawned goes too: SIGTERM to the group,
wait up to ``timeout`` seconds for every member to exit, then SIGKILL to what is left; it returns once the group is
empty (or after 5 more seconds when a member cannot be killed). The servers (``servers.py``: tansu, Redis, s3rver),
``up``'s workers, dashboard and live source, and the dashboard started by tests and benchmarks are all
:class:`ChildProcess`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ChildProcess", "spawn"]

# After SIGKILL the kernel ends the members at once; this only bounds the wait for their exit to be visible.
_KILL_WAIT_S = 5.0


@dataclass
class ChildProcess:
    """A running child process that leads its own process group.

    ``url`` and ``port`` are where a server child listens (empty for a child that serves nothing), ``data_dir`` where
    it keeps data, ``env`` the variables another process needs to use it (e.g. s3rver's credentials for tansu).
    """

    name: str
    process: subprocess.Popen
    log_path: Path | None = None
    url: str = ""
    port: int = 0
    data_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        """Whether the child itself still runs (its group may outlive it: see :meth:`group_alive`)."""
        return self.process.poll() is None

    def group_alive(self) -> bool:
        """Whether any process of the child's group still exists."""
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - a group member we cannot signal still exists
            return True
        return True

    def log_tail(self, chars: int = 1500) -> str:
        """The last ``chars`` characters of the child's log ("" without a log)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, wait up to ``timeout`` for the whole group to exit, then SIGKILL what is left."""
        for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, _KILL_WAIT_S)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self.process.poll()  # reap the leader so its pid leaves the group
                if not self.group_alive():
                    break
                time.sleep(0.05)
            if not self.group_alive():
                break
        self.process.poll()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def spawn(name: str, command: list[str], log_path: Path | None = None, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> ChildProcess:
    """Start ``command`` in a new session (its own process group), stdout and stderr appended to ``log_path``.

    Without ``log_path`` the output is discarded. The parent keeps no handle on the log: the child holds its own copy.
    """
    if log_path is None:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                   start_new_session=True)
    else:
        with open(log_path, "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                       start_new_session=True)
    return ChildProcess(name, process, log_path)
