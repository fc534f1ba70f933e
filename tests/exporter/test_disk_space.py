"""The disk-space check: the disk of a folder not yet created, and one wording for every shortage."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.disk_space import check_free_space, existing_parent, shortage_message
from exporter.errors import DiskSpaceError


def test_a_folder_not_yet_created_is_checked_on_its_nearest_existing_parent(tmp_path: Path) -> None:
    not_yet = tmp_path / "will" / "be" / "created"
    assert existing_parent(not_yet) == tmp_path
    check_free_space(not_yet, 1, "the download")
    with pytest.raises(DiskSpaceError, match=f"on {tmp_path}: the download needs "):
        check_free_space(not_yet, 10**18, "the download")


def test_the_shortage_names_what_needs_the_space_and_what_to_free() -> None:
    one = shortage_message(Path("/data"), "the converted model", 3_000_000_000, 1_000_000_000)
    assert one == (
        "Not enough free disk space on /data: the converted model needs 3.0 GB, only 1.0 GB is free. "
        "Free up 2.0 GB or choose another folder."
    )
    two = shortage_message(Path("/data"), "the download (1.0 GB) and the model (2.0 GB)", 3 * 10**9, 0, plural=True)
    assert "the download (1.0 GB) and the model (2.0 GB) need 3.0 GB, only 0 B is free" in two
