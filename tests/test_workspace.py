"""Atomic writes: whole files or nothing, with the permissions a plain write would give."""

import os
import stat

import pytest

from kroncli.workspace import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text


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
