"""A child process (``up``'s workers, dashboard, source and the servers) stops as a process group: what the child
spawned goes too, even a process that ignores SIGTERM."""

from __future__ import annotations

import os
import time

from emotion_monitor.children import spawn


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stop_takes_the_whole_group_and_escalates_to_sigkill(tmp_path):
    # a child that ignores SIGTERM and has a grandchild that ignores it too
    script = 'trap "" TERM; (trap "" TERM; sleep 300) & echo $! > grandchild.pid; wait'
    child = spawn("stubborn", ["bash", "-c", script], tmp_path / "stubborn.log", dict(os.environ), cwd=tmp_path)
    deadline = time.monotonic() + 10
    while not (tmp_path / "grandchild.pid").exists() or not (tmp_path / "grandchild.pid").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert os.getpgid(grandchild) == child.pid  # its own group, led by the child

    started = time.monotonic()
    child.stop(timeout=1.0)
    assert time.monotonic() - started < 8
    assert not child.alive() and not child.group_alive()
    assert not _alive(child.pid) and not _alive(grandchild)


def test_stop_of_a_well_behaved_child_is_quick(tmp_path):
    child = spawn("sleeper", ["sleep", "300"], tmp_path / "sleeper.log", dict(os.environ))
    started = time.monotonic()
    child.stop(timeout=10.0)
    assert time.monotonic() - started < 2 and not child.group_alive()
    assert child.process.returncode == -15  # ended by SIGTERM, no SIGKILL needed


def test_a_server_leads_its_group_and_its_log_tail_is_readable(tmp_path):
    """The servers are the same handle: started in a new session (so ``stop`` can take the group), log kept."""
    from emotion_monitor.servers import start_redis

    server = start_redis(log_dir=tmp_path)
    try:
        assert os.getpgid(server.pid) == server.pid and os.getsid(server.pid) == server.pid
        assert "Ready to accept connections" in server.log_tail()
    finally:
        server.stop()
    assert not server.alive() and not server.group_alive() and not _alive(server.pid)
