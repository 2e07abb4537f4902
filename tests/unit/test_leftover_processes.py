"""The check behind `no_process_left_behind` (tests/conftest.py): it finds every living
process the run started, its own children and orphans in sessions of their own alike."""

import os
import signal
import subprocess
import sys

from tests.processes import RUN_MARKER, leftover_processes


def test_a_child_still_running_is_found_and_a_finished_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        assert child.pid in {info.pid for info in leftover_processes()}
    finally:
        child.kill()
        child.wait()
    assert child.pid not in {info.pid for info in leftover_processes()}


def test_an_orphan_in_a_session_of_its_own_is_found_by_the_run_marker() -> None:
    """What a launcher killed before its services leaves: processes reparented away from
    the test run, found because they inherited its marker."""
    assert os.environ.get(RUN_MARKER)
    starter = subprocess.run(
        [
            sys.executable,
            "-c",
            "import subprocess as s; print(s.Popen(['sleep', '600'], start_new_session=True,"
            " stdin=s.DEVNULL, stdout=s.DEVNULL, stderr=s.DEVNULL).pid)",
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    orphan = int(starter.stdout)
    try:
        found = {info.pid: info for info in leftover_processes()}
        assert orphan in found
        assert "sleep 600" in found[orphan].command
        assert found[orphan].parent != os.getpid(), "not a child of the test run any more"
    finally:
        os.kill(orphan, signal.SIGKILL)
