"""write_text_atomically: whole old or whole new file, never a stray temporary."""

from __future__ import annotations

import gzip
import threading

import pytest

from perfpred._files import write_text_atomically


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "cache.json"
    write_text_atomically(target, "old")
    write_text_atomically(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["cache.json"]


def test_compress_writes_gzip(tmp_path):
    target = write_text_atomically(tmp_path / "cache.json.gz", '{"a": 1}', compress=True)
    with gzip.open(target, "rt") as fh:
        assert fh.read() == '{"a": 1}'


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "cache.json"
    write_text_atomically(target, "old")
    with pytest.raises(TypeError):
        write_text_atomically(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


def test_concurrent_writers_each_rename_a_whole_file(tmp_path):
    target = tmp_path / "shared.json"
    texts = [str(i) * 100_000 for i in range(8)]
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(5):
                write_text_atomically(target, text)
        except BaseException as exc:  # reported by the main thread's assert
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]
