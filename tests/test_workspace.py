"""Atomic writes: whole files or nothing, with the permissions a plain write would give. The workspace lock: freed
when its holder dies however it dies, and a lock record left behind taken over with a word, or refused."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from kroncli.cli import app
from kroncli.errors import KronError
from kroncli.workspace import Workspace, atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text

runner = CliRunner()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_files_and_folders_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_json(tmp_path / "manifest.json", {"stages": {}})
        with atomic_dir(tmp_path / "student") as folder:
            (folder / "config.json").write_text("{}")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        os.mkdir(tmp_path / "plain")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "manifest.json") == _mode(plain) == 0o666 & ~mask
    assert _mode(tmp_path / "student") == _mode(tmp_path / "plain") == 0o777 & ~mask
    assert (tmp_path / "student" / "config.json").read_text() == "{}"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "corpus.txt"
    atomic_write_text(target, "old\n")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), atomic_dir(tmp_path / "student") as folder:
        (folder / "half.bin").write_bytes(b"\0")
        raise Boom
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "text where bytes belong")  # the write itself fails, after the temporary exists
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


# ------------------------------------------------------------------------------------------------ the lock

def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lock_only(tmp_path, text: str):
    """A folder holding nothing but a lock record, as a command killed before it wrote anything leaves it."""
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    (ws.root / ".lock").write_text(text)
    return ws


def test_a_folder_holding_only_a_stale_lock_is_no_workspace(tmp_path, tiny_bert_dir):
    """What a killed `kron factorize` leaves: the rerun creates the workspace (saying it took the lock over) instead
    of calling it existing; the old-format "PID HOST" record does not break it."""
    ws = _lock_only(tmp_path, f"{_dead_pid()} {socket.gethostname()}\n")
    (ws.root / ".lock.flock").write_text("")
    assert not ws.exists()
    ws.prepare_new(force=False)
    res = runner.invoke(app, ["factorize", str(tiny_bert_dir), "--ratio", "2", "-w", str(ws.root)])
    assert res.exit_code == 0, res.output
    assert "taking over the lock" in res.stderr and "ended without releasing it" in res.stderr
    assert (ws.root / "manifest.json").is_file()
    assert not (ws.root / ".lock").exists() and not (ws.root / ".lock.flock").exists()


def test_a_lock_only_folder_a_failed_command_leaves_is_removed(tmp_path):
    ws = _lock_only(tmp_path, f"{_dead_pid()} {socket.gethostname()}\n")
    with pytest.raises(RuntimeError), ws.lock():
        raise RuntimeError("failed before writing anything")
    assert not ws.root.exists()
    plain = Workspace(tmp_path / "made-by-hand")
    plain.root.mkdir()
    with plain.lock():
        pass
    assert plain.root.is_dir() and not any(plain.root.iterdir())  # an empty folder the user made stays


def test_a_stale_lock_is_taken_over_with_a_line(tmp_path, capsys):
    pid = _dead_pid()
    ws = _lock_only(tmp_path, json.dumps({"pid": pid, "host": socket.gethostname(), "started": "yesterday"}))
    (ws.root / "manifest.json").write_text("{}")
    with ws.lock():
        held = json.loads((ws.root / ".lock").read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    err = capsys.readouterr().err
    assert f"warning: taking over the lock of process {pid} on {socket.gethostname()} since yesterday" in err
    assert len(err.splitlines()) == 1
    assert not (ws.root / ".lock").exists()


@pytest.mark.parametrize("text", ["", "garbage\n", "\x00\x01\x02", "-5 host", '{"pid": "x"}', "[1, 2]"])
def test_a_damaged_lock_is_taken_over_with_a_line(tmp_path, capsys, text):
    ws = _lock_only(tmp_path, text)
    (ws.root / "manifest.json").write_text("{}")
    with ws.lock():
        pass
    err = capsys.readouterr().err
    assert "names no process (damaged); taking the lock over" in err and len(err.splitlines()) == 1


def test_another_machines_lock_is_refused_unless_forced(tmp_path, capsys, monkeypatch):
    record = json.dumps({"pid": os.getpid(), "host": "elsewhere.example", "boot": "another-kernel"})
    ws = _lock_only(tmp_path, record)
    (ws.root / "manifest.json").write_text("{}")
    with pytest.raises(KronError, match="locked by process .* on elsewhere.example.*KRON_FORCE_LOCK=1"), ws.lock():
        pass
    assert (ws.root / ".lock").read_text() == record  # left as it was
    with ws.lock(force=True):
        pass
    assert "taking over the lock of process" in capsys.readouterr().err
    (ws.root / ".lock").write_text(record)
    monkeypatch.setenv("KRON_FORCE_LOCK", "1")
    with ws.lock():
        pass
    assert not (ws.root / ".lock").exists()


def test_factorize_force_takes_over_another_machines_lock(tmp_path, tiny_bert_dir):
    ws = _lock_only(tmp_path, f"{os.getpid()} elsewhere.example\n")
    (ws.root / "stray.txt").write_text("")
    res = runner.invoke(app, ["factorize", str(tiny_bert_dir), "--ratio", "2", "-w", str(ws.root)])
    assert res.exit_code == 2 and "--force" in res.output  # a workspace (not only a lock) is there
    res = runner.invoke(app, ["factorize", str(tiny_bert_dir), "--ratio", "2", "-w", str(ws.root), "--force"])
    assert res.exit_code == 0 and "(forced)" in res.stderr, res.output


def test_a_live_process_that_is_not_kron_does_not_hold_the_lock(tmp_path, capsys):
    """An old-format record naming a PID now used by another program is stale; one naming a running kron is not."""
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    script = tmp_path / "kron"  # how a `kron ...` console script shows in /proc/PID/cmdline: python .../bin/kron
    script.write_text("import sys\nsys.stdin.read()\n")
    kron = subprocess.Popen([sys.executable, str(script), "distill"], stdin=subprocess.PIPE)
    try:
        ws = _lock_only(tmp_path, f"{other.pid} {socket.gethostname()}\n")
        (ws.root / "manifest.json").write_text("{}")
        with ws.lock():
            pass
        assert f"taking over the lock of process {other.pid}" in capsys.readouterr().err
        (ws.root / ".lock").write_text(f"{kron.pid} {socket.gethostname()}\n")
        with pytest.raises(KronError, match=f"in use by process {kron.pid}"), ws.lock():
            pass
    finally:
        for proc in (other, kron):
            proc.communicate(b"")


def test_sigterm_in_factorize_releases_the_lock_and_says_one_line(tmp_path, tiny_bert_dir):
    """SIGTERM while the teacher loads (the lock held, nothing written): exit 143 with one line, no lock left, no
    folder. The teacher's loading waits on stdin, so the signal arrives at a known point, without timing."""
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\n"
        "from kroncli import sources\n"
        "from kroncli.cli import main\n"
        "real = sources.load_model\n"
        "def held(*a, **k):\n"
        "    print('loading', file=sys.stderr, flush=True)\n"
        "    sys.stdin.readline()\n"
        "    return real(*a, **k)\n"
        "sources.load_model = held\n"
        "main()\n")
    ws = tmp_path / "ws"
    proc = subprocess.Popen([sys.executable, str(driver), "factorize", str(tiny_bert_dir), "--ratio", "2", "-w",
                             str(ws)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = []
    for line in iter(proc.stderr.readline, ""):  # what the command says before the teacher loads, then our line
        before.append(line)
        if line == "loading\n":
            break
    assert before[-1:] == ["loading\n"], before
    assert (ws / ".lock").is_file()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == ["terminated"]
    assert not ws.exists()  # the folder it made, with nothing in it but its lock, is gone
