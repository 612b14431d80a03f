"""A benchmark runner's claims on cell folders (agents.benchmark.claims): exclusive, live or
stale, never clobbered."""

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.benchmark import claims
from agents.runs.folder import FolderLock


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_claim(folder: Path, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    info = {"owner": "other-runner", "host": socket.gethostname(), "pid": os.getpid(),
            "started": now, "heartbeat": now, **fields}
    (folder / claims.CLAIM).write_text(json.dumps(info))


def test_a_claim_file_holds_owner_host_pid_and_heartbeat(tmp_path):
    folder = tmp_path / "cell"
    claim = claims.try_claim(folder, "me")
    assert claim is not None and claim.took_over is None and claim.holds()
    saved = json.loads((folder / claims.CLAIM).read_text())
    assert saved["owner"] == "me" and saved["host"] == socket.gethostname()
    assert saved["pid"] == os.getpid() and saved["started"] == saved["heartbeat"]
    assert abs(saved["heartbeat"] - time.time()) < 60
    assert claims.read_claim(folder) == claim.info


def test_a_live_claim_is_skipped_and_its_owner_keeps_it(tmp_path):
    folder = tmp_path / "cell"
    mine = claims.try_claim(folder, "me")
    assert claims.try_claim(folder, "you") is None
    again = claims.try_claim(folder, "me")  # the same runner asking again
    assert again is not None and again.info == mine.info
    assert claims.read_claim(folder).owner == "me"


def test_a_claim_of_a_dead_process_is_taken_over(tmp_path):
    folder = tmp_path / "cell"
    pid = dead_pid()
    write_claim(folder, pid=pid)
    assert claims.is_stale(claims.read_claim(folder))
    claim = claims.try_claim(folder, "me")
    assert claim is not None and claim.took_over.pid == pid
    assert claim.took_over.owner == "other-runner" and claims.read_claim(folder).owner == "me"


def test_on_another_host_only_an_old_heartbeat_is_stale(tmp_path):
    folder = tmp_path / "cell"
    write_claim(folder, host="another-host", pid=dead_pid())  # its pid says nothing here
    assert claims.try_claim(folder, "me") is None
    old = time.time() - claims.STALE_AFTER_S - 5
    write_claim(folder, host="another-host", heartbeat=old, started=old)
    claim = claims.try_claim(folder, "me")
    assert claim is not None and claim.took_over.host == "another-host"
    # a live process on this host with an old heartbeat (a stalled runner) is stale too
    write_claim(folder, heartbeat=old, started=old)
    assert claims.is_stale(claims.read_claim(folder))


def test_a_damaged_claim_counts_by_its_age(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    (folder / claims.CLAIM).write_text('{"owner": "half-writ')
    assert claims.try_claim(folder, "me") is None  # fresh: someone may be writing it
    old = time.time() - claims.STALE_AFTER_S - 5
    os.utime(folder / claims.CLAIM, (old, old))
    assert claims.try_claim(folder, "me") is not None


def test_a_stale_claim_on_a_folder_a_run_still_writes_is_not_taken(tmp_path):
    """An orphaned run (its runner died) still holds the folder's lock: wait for it."""
    folder = tmp_path / "cell"
    write_claim(folder, pid=dead_pid())
    run_lock = FolderLock(folder)
    assert run_lock.acquire()
    try:
        assert claims.try_claim(folder, "me") is None
    finally:
        run_lock.release()
    assert claims.try_claim(folder, "me") is not None


def test_heartbeats_refresh_the_claim_and_notice_a_takeover(tmp_path, capsys):
    folder = tmp_path / "cell"
    claim = claims.try_claim(folder, "me")
    first = claim.info.heartbeat
    with claims.Heartbeat(interval=0.05) as heartbeat:
        heartbeat.add(claim)
        deadline = time.time() + 10
        while claims.read_claim(folder).heartbeat == first and time.time() < deadline:
            time.sleep(0.02)
        assert claims.read_claim(folder).heartbeat > first
        write_claim(folder, owner="usurper")  # taken over while this runner stalled
        while not heartbeat.lost and time.time() < deadline:
            time.sleep(0.02)
    assert heartbeat.lost == [claim]
    assert claims.read_claim(folder).owner == "usurper"  # not overwritten by the old owner
    assert not claim.heartbeat() and "taken over by another runner" in capsys.readouterr().err


def test_release_removes_only_its_own_claim(tmp_path):
    folder = tmp_path / "cell"
    claim = claims.try_claim(folder, "me")
    write_claim(folder, owner="usurper")
    claim.release()
    assert claims.read_claim(folder).owner == "usurper"
    (folder / claims.CLAIM).unlink()
    claim = claims.try_claim(folder, "me")
    claim.release()
    assert claims.read_claim(folder) is None and not claim.holds()


def test_only_the_claim_holder_clears_a_folder(tmp_path):
    folder = tmp_path / "cell"
    write_claim(folder)
    (folder / "sub").mkdir()
    (folder / "sub" / "log.jsonl").write_text("work of another runner\n")
    (folder / "result.json").write_text("{}")
    with pytest.raises(claims.NotClaimed, match="refusing to delete"):
        claims.clear_folder(folder, "me")
    assert (folder / "sub" / "log.jsonl").is_file() and (folder / "result.json").is_file()
    (folder / claims.CLAIM).unlink()
    claims.try_claim(folder, "me")
    FolderLock(folder).acquire()  # leaves .lock behind, as a run does
    claims.clear_folder(folder, "me")
    assert sorted(p.name for p in folder.iterdir()) == [claims.CLAIM, claims.CLAIM_GUARD,
                                                        claims.LOCK]


def _race(folder: str, owner: str, start: float, results: "mp.Queue", done) -> None:
    while time.time() < start:
        time.sleep(0.001)
    results.put((owner, claims.try_claim(Path(folder), owner) is not None))
    done.wait(60)  # a winner that ended would leave a stale claim to the slowest racers


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale"])
def test_racing_runners_claim_a_folder_once(tmp_path, stale):
    folder = tmp_path / "cell"
    if stale:
        write_claim(folder, pid=dead_pid())
    ctx = mp.get_context("fork")
    results, done = ctx.Queue(), ctx.Event()
    start = time.time() + 0.5
    procs = [ctx.Process(target=_race, args=(str(folder), f"runner-{k}", start, results, done))
             for k in range(8)]
    for proc in procs:
        proc.start()
    outcomes = dict(results.get(timeout=60) for _ in procs)
    done.set()
    for proc in procs:
        proc.join()
    winners = [owner for owner, won in outcomes.items() if won]
    assert len(outcomes) == 8 and len(winners) == 1
    assert claims.read_claim(folder).owner == winners[0]


def blocked_signals(thread_id: int) -> set[int]:
    """The signals a thread of this process blocks (Linux: /proc)."""
    status = Path(f"/proc/self/task/{thread_id}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("SigBlk:")), 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_the_heartbeat_thread_leaves_signals_to_the_main_thread():
    """SIGINT and SIGTERM go to the main thread, whose wait for the cells they interrupt:
    the heartbeat thread blocks them, the main thread does not."""
    import signal
    import threading

    with claims.Heartbeat(interval=0.01) as heartbeat:
        thread_id = heartbeat._thread.native_id
        assert {signal.SIGINT, signal.SIGTERM} <= blocked_signals(thread_id)
        main = blocked_signals(threading.main_thread().native_id)
        assert not {signal.SIGINT, signal.SIGTERM} & main
