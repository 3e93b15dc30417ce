"""Files and folders written whole (``imagesets.atomic``, which every package writes through): a failure while
writing leaves the previous version and nothing half-written beside it."""

from __future__ import annotations

import pytest

from imagesets.atomic import staged_files, staged_folder, write_text


def test_a_failure_mid_write_leaves_every_previous_file_and_no_staging_name(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    write_text(a, "old a")
    write_text(b, "old b")
    with pytest.raises(RuntimeError):
        with staged_files([a, b]) as (ta, tb):
            ta.write_text("new a")  # one written, the other not yet: neither may replace its file
            raise RuntimeError("killed while writing b")
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    with staged_files([a, b]) as (ta, tb):
        ta.write_text("new a")
        tb.write_text("new b")
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert write_text(tmp_path / "deep" / "c.txt", "c").read_text() == "c"  # its folder made


def test_a_folder_is_replaced_only_once_its_new_version_is_complete(tmp_path):
    folder = tmp_path / "bundle"
    with staged_folder(folder) as staging:
        (staging / "weights").write_text("v1")
    with pytest.raises(OSError):
        with staged_folder(folder) as staging:
            (staging / "weights").write_text("v2")
            raise OSError("disk full")
    assert (folder / "weights").read_text() == "v1" and [p.name for p in tmp_path.iterdir()] == ["bundle"]
    with staged_folder(folder) as staging:
        (staging / "card").write_text("v3")
    assert sorted(p.name for p in folder.iterdir()) == ["card"]
