"""The artifact folder: one export at a time, leftovers of killed exports cleaned, file-system errors
explained in one line with nothing left behind. Real processes, real signals, a real small disk."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.manifest import Manifest
from exporter.errors import DiskSpaceError, TargetBusyError, TargetFolderError
from exporter.export import export_model
from exporter.file_lock import try_lock
from exporter.target import clean_stale, lock_path

ROOT = Path(__file__).resolve().parents[2]
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="stops and kills processes with POSIX signals")


def leftovers(parent: Path) -> list[str]:
    """Hidden things an export puts beside its target while it runs."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def start_cli_export(checkpoint: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`python -m exporter` in its own process, returned once it is writing the vision graph."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", str(checkpoint), str(out), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("[vision]"):
            return proc
    proc.wait()
    pytest.fail(f"the export ended before writing: {proc.stderr.read()}")


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def assert_one_error_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---- one export per folder ----------------------------------------------------------------------


@posix_only
def test_a_second_export_to_the_same_folder_is_refused_and_the_first_completes(tiny_checkpoint, tmp_path):
    out = tmp_path / "model"
    first = start_cli_export(tiny_checkpoint[0], out, "--precision", "fp32")
    first.send_signal(signal.SIGSTOP)  # hold it mid-write, for as long as the test needs
    try:
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(".model.partial-")]
        assert len(partial) == 1

        second = run_cli(str(tiny_checkpoint[0]), str(out))
        assert_one_error_line(second, str(out), "being written by another conversion")
        assert partial[0].is_dir(), "the second export must not touch the first one's folder"

        other = export_model(tiny_checkpoint[0], tmp_path / "other")  # same parent folder, other name
        assert (other.out_dir / "manifest.json").exists()
        assert partial[0].is_dir(), "cleaning leftovers must spare a running export"
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert Manifest.load(out).precision == "fp32"
    assert leftovers(tmp_path) == []


def test_the_lock_is_refused_to_a_second_holder_and_leaves_no_file(tmp_path):
    path = tmp_path / ".model.export-lock"
    held = try_lock(path)
    assert held is not None and path.exists()
    assert try_lock(path) is None  # another handle, even in this process, is another holder
    held.release()
    assert not path.exists()
    with try_lock(path):
        pass
    assert not path.exists()


# ---- leftovers of killed exports ----------------------------------------------------------------


@posix_only
def test_a_killed_export_is_cleaned_up_by_the_next_export_into_that_folder(tiny_checkpoint, tmp_path):
    killed = start_cli_export(tiny_checkpoint[0], tmp_path / "first")
    killed.kill()
    killed.wait()
    assert f".first.partial-{killed.pid}" in leftovers(tmp_path)

    export_model(tiny_checkpoint[0], tmp_path / "second")  # another name: still cleans the folder
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "first").exists()
    assert (tmp_path / "second" / "manifest.json").exists()


def test_leftovers_of_live_or_locked_exports_are_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".a.partial-{sleeper.pid}"
        locked = tmp_path / f".b.partial-{dead_pid()}"  # the process is gone, but an export of b runs now
        stale = tmp_path / f".c.partial-{dead_pid()}"
        for folder in (live, locked, stale):
            folder.mkdir()
            (folder / "decoder.onnx.data").write_bytes(b"x" * 1000)
        with try_lock(lock_path(tmp_path / "b")):
            assert clean_stale(tmp_path) == [stale]
        assert live.is_dir() and locked.is_dir() and not stale.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_model_moved_aside_by_a_killed_swap_is_put_back(tiny_int4, tmp_path):
    """Killed between its two renames, an export leaves the old model in .NAME.old-PID and no NAME."""
    aside = tmp_path / f".model.old-{dead_pid()}"
    shutil.copytree(tiny_int4, aside)
    clean_stale(tmp_path)
    assert (tmp_path / "model" / "manifest.json").exists() and leftovers(tmp_path) == []


# ---- file-system errors -------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_target_that_is_a_file_is_refused_in_one_line(tiny_checkpoint, tmp_path, overwrite):
    out = tmp_path / "model"
    out.write_text("my notes")
    proc = run_cli(str(tiny_checkpoint[0]), str(out), *(["--overwrite"] if overwrite else []))
    assert_one_error_line(proc, f"{out} is a file, not a folder")
    assert out.read_text() == "my notes" and leftovers(tmp_path) == []


def test_a_target_under_a_file_is_refused_in_one_line(tiny_checkpoint, tmp_path):
    (tmp_path / "notes").write_text("my notes")
    proc = run_cli(str(tiny_checkpoint[0]), str(tmp_path / "notes" / "model"))
    assert_one_error_line(proc, f"{tmp_path / 'notes'} is a file, not a folder")
    assert (tmp_path / "notes").read_text() == "my notes" and leftovers(tmp_path) == []


@contextmanager
def small_disk(folder: Path, size: str, read_only: bool = False):
    """A tmpfs of `size` at `folder`, mounted for the block (needs root; skips otherwise)."""
    folder.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    if (
        sys.platform != "linux"
        or os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode
    ):
        pytest.skip("mounting a small disk needs root on Linux")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_mid_export_is_one_line_and_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    """A real ENOSPC: the 18 MB int4 export does not fit on an 8 MB disk. The free-space check
    before writing is told there is room, as when another program fills the disk meanwhile."""
    import exporter.export as ex

    monkeypatch.setattr(ex.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40))
    with small_disk(tmp_path / "disk", "8m") as disk:
        with pytest.raises(DiskSpaceError, match=f"The disk holding {disk} is full"):
            export_model(tiny_checkpoint[0], disk / "model")
        assert list(disk.iterdir()) == []


def test_a_full_disk_reported_by_the_file_is_one_line_and_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    """The same without root: the data file's writes fail with ENOSPC after 4 MB (injected at the
    file object, the boundary with the OS)."""
    import exporter.writer as writer_module

    class FillingFile:
        def __init__(self, fh):
            self._fh, self._room = fh, 4 << 20

        def write(self, data):
            self._room -= len(data)
            if self._room < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._fh.write(data)

        def __getattr__(self, name):
            return getattr(self._fh, name)

    real_init = writer_module.ExternalDataWriter.__init__

    def init(self, path):
        real_init(self, path)
        self._fh = FillingFile(self._fh)

    monkeypatch.setattr(writer_module.ExternalDataWriter, "__init__", init)
    with pytest.raises(DiskSpaceError, match="is full"):
        export_model(tiny_checkpoint[0], tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_target_is_one_line_and_leaves_nothing(tiny_checkpoint, tmp_path):
    if os.geteuid() == 0:  # root writes through file modes: use a read-only disk
        context = small_disk(tmp_path / "disk", "1m", read_only=True)
    else:
        (tmp_path / "disk").mkdir()
        (tmp_path / "disk").chmod(0o555)
        context = _nothing(tmp_path / "disk")
    with context as disk:
        with pytest.raises(TargetFolderError, match=f"Cannot write into {disk}: "):
            export_model(tiny_checkpoint[0], disk / "model")
        assert list(disk.iterdir()) == []


@contextmanager
def _nothing(value):
    yield value


def test_busy_is_its_own_error(tiny_checkpoint, tmp_path):
    """In one process too (the app's wizard and a test may share one): the lock holds."""
    with try_lock(lock_path(tmp_path / "model")):
        with pytest.raises(TargetBusyError, match="being written by another conversion"):
            export_model(tiny_checkpoint[0], tmp_path / "model")
    assert not (tmp_path / "model").exists() and leftovers(tmp_path) == []
