"""Whether an artifact file is still what the manifest says: its sha256, and a cheap stamp that
lets a later load trust it without hashing it all again (see engine/artifacts.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Which files' contents were last found equal to the manifest, each with its stamp (see
# file_stamp); a file whose stamp changed is hashed again before use.
VERIFIED_NAME = ".verified.json"
SAMPLE_BLOCKS = 16  # a stamp's sample: this many blocks spread evenly over the file
SAMPLE_BLOCK_BYTES = 64 << 10


def sha256_file(path: Path, chunk: int = 8 << 20, should_stop=lambda: False) -> str | None:
    """The file's sha256, or None if `should_stop()` said so between two chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            if should_stop():
                return None
            h.update(block)
    return h.hexdigest()


def file_stamp(path: Path) -> dict:
    """What a later load compares to trust a file without hashing it all.

    "stat" is size, modification time, change time and inode: any write through the file system
    moves the change time, which no program can set back (os.utime sets it to now), and a copy
    or replacement is a new inode. "sample" is the sha256 of 16 blocks of 64 KiB spread evenly
    over the file (all of it when smaller): about 1 MB read per file, a few milliseconds.
    (On Windows st_ctime is the creation time, which can be set: there a same-size edit with both
    times restored is caught only inside the sampled blocks, or by the full check.)"""
    path = Path(path)
    with path.open("rb") as fh:
        st = os.fstat(fh.fileno())
        digest = hashlib.sha256()
        if st.st_size <= SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES:
            digest.update(fh.read())
        else:
            step = (st.st_size - SAMPLE_BLOCK_BYTES) // (SAMPLE_BLOCKS - 1)
            for i in range(SAMPLE_BLOCKS):
                fh.seek(i * step)
                digest.update(fh.read(SAMPLE_BLOCK_BYTES))
    return {"stat": [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino], "sample": digest.hexdigest()}


def write_verified(folder: Path, names, stamps: dict | None = None) -> None:
    """Record that these files match the manifest as they are now (their stamps, taken now
    unless the caller took them already)."""
    folder = Path(folder)
    if stamps is None:
        stamps = {name: file_stamp(folder / name) for name in names}
    try:
        (folder / VERIFIED_NAME).write_text(json.dumps({name: stamps[name] for name in names}))
    except OSError:
        pass  # a read-only folder is fine: its files are simply hashed again next time
