"""Atomic writes: permissions kept, symlinks written through, errors naming the user's path,
no temporary file left behind (exceptions, exit, killed writers)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from physode.data import atomic
from physode.data.atomic import atomic_path, check_writable, remove_stale_temporaries
from physode.errors import InvalidArgument

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX modes, links and signals")
ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _hidden(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith("."))


def _write(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# ------------------------------------------------------------------------- permissions
@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o604], ids=oct)
def test_a_replaced_file_keeps_its_mode(tmp_path: Path, mode: int, umask_022) -> None:
    path = tmp_path / "out.nc"
    path.write_bytes(b"old")
    os.chmod(path, mode)
    _write(path, b"new")
    assert path.read_bytes() == b"new"
    assert _mode(path) == mode
    assert _hidden(tmp_path) == []


@posix_only
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_a_new_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        _write(tmp_path / "new.h5", b"data")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "new.h5") == 0o666 & ~umask


@posix_only
def test_a_replacement_is_private_while_it_is_written(tmp_path: Path, umask_022) -> None:
    path = tmp_path / "secret.h5"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    with atomic_path(path) as tmp:
        assert _mode(tmp) == 0o600  # never world-readable, not even half written
        tmp.write_bytes(b"new")
    assert _mode(path) == 0o600


# ------------------------------------------------------------------------- symbolic links
@posix_only
def test_a_symlink_is_written_through_and_stays_a_link(tmp_path: Path, umask_022) -> None:
    real_dir = tmp_path / "store"
    real_dir.mkdir()
    target = real_dir / "fit.nc"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    link = tmp_path / "latest.nc"
    link.symlink_to(Path("store") / "fit.nc")  # relative link
    _write(link, b"new")
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "fit.nc")
    assert target.read_bytes() == b"new" and _mode(target) == 0o600
    assert _hidden(tmp_path) == [] and _hidden(real_dir) == []
    chain = tmp_path / "chain.nc"
    chain.symlink_to(link)  # a link to a link
    _write(chain, b"newer")
    assert chain.is_symlink() and link.is_symlink() and target.read_bytes() == b"newer"


@posix_only
def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "out.h5"
    link.symlink_to(tmp_path / "made.h5")
    _write(link, b"data")
    assert link.is_symlink() and (tmp_path / "made.h5").read_bytes() == b"data"


@posix_only
def test_a_symlink_loop_is_refused_naming_the_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(OSError) as info:
        _write(a, b"x")
    assert info.value.filename == str(a)
    assert a.is_symlink() and b.is_symlink() and _hidden(tmp_path) == []


# ------------------------------------------------------------------------- errors
def _unwritable_cases(tmp_path: Path) -> list[tuple[str, str]]:
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    cases = [
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "sub") + os.sep, "directory"),
        (str(tmp_path / "missing" / "x.nc"), "no such directory"),
        (str(a_file / "x.nc"), "directory"),
    ]
    if os.path.isdir("/proc/self"):
        cases.append(("/proc/x.nc", "cannot create files in '/proc'"))
    if os.path.exists("/dev/null"):
        cases.append(("/dev/null", "not a regular file"))
    return cases


def test_unwritable_paths_are_refused_naming_the_users_path(tmp_path: Path) -> None:
    for path, fragment in _unwritable_cases(tmp_path):
        for attempt in (check_writable, lambda p: _write(p, b"x")):
            with pytest.raises(OSError) as info:
                attempt(path)
            assert info.value.filename == path, (path, info.value)
            assert fragment in str(info.value), (path, info.value)
            assert ".tmp" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["plain.txt"]
    with pytest.raises(InvalidArgument, match="empty output path"):
        _write("", b"x")
    with pytest.raises(InvalidArgument, match="empty output path"):
        check_writable("")


@posix_only
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes read-only files and directories")
def test_read_only_files_and_directories_are_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro.nc"
    ro.write_bytes(b"keep")
    os.chmod(ro, 0o444)
    with pytest.raises(PermissionError) as info:
        _write(ro, b"x")
    assert info.value.filename == str(ro) and ro.read_bytes() == b"keep"
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        with pytest.raises(PermissionError) as info:
            _write(locked / "x.nc", b"x")
        assert info.value.filename == str(locked / "x.nc") and ".tmp" not in str(info.value)
    finally:
        os.chmod(locked, 0o755)


def test_a_writer_error_on_the_temporary_names_the_users_path(tmp_path: Path) -> None:
    path = tmp_path / "out.h5"
    with pytest.raises(OSError) as info:
        with atomic_path(path) as tmp:
            raise FileNotFoundError(2, "No such file or directory", str(tmp))
    assert info.value.filename == str(path) and ".tmp" not in str(info.value)
    assert os.listdir(tmp_path) == []


def test_check_writable_allows_missing_parents_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "fit.nc"
    with pytest.raises(FileNotFoundError):
        check_writable(out)
    assert check_writable(out, parents=True) == out
    assert os.listdir(tmp_path) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        check_writable(blocker / "sub" / "fit.nc", parents=True)
    assert info.value.filename == str(blocker / "sub" / "fit.nc")
    assert os.listdir(tmp_path) == ["file"]


# ------------------------------------------------------------------------- no temporaries left
@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(3)])
def test_any_exit_from_the_block_removes_the_temporary(tmp_path: Path, exc) -> None:
    path = tmp_path / "out.h5"
    path.write_bytes(b"previous")
    with pytest.raises(type(exc)):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise exc
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.h5"]


def _python(code: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, **kw)


@posix_only
def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "out.nc"
    path.write_bytes(b"v1")
    proc = _python("""
        import os, signal
        from physode.data.atomic import atomic_path
        with atomic_path("out.nc") as tmp:
            tmp.write_bytes(b"half written")
            print(tmp.name, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """, tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftover = proc.stdout.strip()
    assert leftover.startswith(".out.nc.") and leftover.endswith(".tmp")
    assert (tmp_path / leftover).exists() and path.read_bytes() == b"v1"
    # files that must survive: a live writer (this process's parent), another host, old
    # names without a pid, another output's temporary, an unrelated hidden file
    live = f".out.nc.{atomic._HOST}-{os.getppid()}.0123abcd.tmp"
    other_host = f".out.nc.{'f' * 8 if atomic._HOST != 'f' * 8 else '0' * 8}-999999.0123abcd.tmp"
    keep = [live, other_host, ".out.nc.x1y2z3ab.tmp", ".other.nc.00000000-1.0123abcd.tmp",
            ".out.nc.swp"]
    for name in keep:
        (tmp_path / name).write_bytes(b"")
    _write(path, b"v2")
    assert path.read_bytes() == b"v2"
    assert _hidden(tmp_path) == sorted(keep)


@posix_only
def test_remove_stale_temporaries_reports_what_it_removed(tmp_path: Path) -> None:
    proc = _python("import os; print(os.getpid())", tmp_path)
    dead = int(proc.stdout)
    stale = tmp_path / f".fit.nc.{atomic._HOST}-{dead}.deadbeef.tmp"
    stale.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path / "fit.nc") == [stale]
    assert not stale.exists()


def test_interpreter_exit_removes_a_write_still_in_flight(tmp_path: Path) -> None:
    proc = _python("""
        import threading, time
        from physode.data.atomic import atomic_path
        ready = threading.Event()
        def writer():
            with atomic_path("slow.h5") as tmp:
                tmp.write_bytes(b"partial")
                ready.set()
                time.sleep(60)
        threading.Thread(target=writer, daemon=True).start()
        ready.wait(30)
        raise SystemExit(0)  # the daemon thread never finishes its block
        """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path) == []


def test_concurrent_writes_to_one_path_leave_one_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                _write(path, bytes([i]) * 1000)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data = path.read_bytes()
    assert len(data) == 1000 and len(set(data)) == 1
    assert os.listdir(tmp_path) == ["out.bin"]
