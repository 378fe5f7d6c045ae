"""Storage on local disk and in memory; the same tests run on a real S3 endpoint in
tests/system/test_storage_s3.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncnb.storage import Storage, storage_from_description

WID = "0123456789abcdef" * 2
# The tests that hold for every backend (tests/system/test_storage_s3.py runs them on S3).
EVERY_BACKEND = [
    "test_write_and_read_bytes",
    "test_write_and_read_json",
    "test_missing_reads_are_none",
    "test_delete",
    "test_exists_and_size",
    "test_list_names",
    "test_delete_tree",
    "test_streaming_open_write_and_read",
    "test_describe_round_trip",
    "test_paths_stay_under_the_root",
    "test_shared_across_processes_flag",
]


@pytest.fixture(params=["file", "memory"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "file":
        yield Storage(f"file://{tmp_path / 'root'}")
    else:
        found = Storage(f"memory://asyncnb-test-{uuid.uuid4().hex}")
        yield found
        found.delete_tree(found.root)


def test_write_and_read_bytes(storage: Storage) -> None:
    path = storage.status_path("iris", WID)
    storage.write_bytes(path, b"\x00first\nline")
    assert storage.read_bytes(path) == b"\x00first\nline"
    storage.write_bytes(path, b"second")
    assert storage.read_bytes(path) == b"second"


def test_write_and_read_json(storage: Storage) -> None:
    path = storage.spec_path("iris")
    value = {"version": 3, "options": {"gpu": 0.5, "tags": ["a", "ü"]}, "none": None}
    storage.write_json(path, value)
    assert storage.read_json(path) == value


def test_missing_reads_are_none(storage: Storage) -> None:
    assert storage.read_bytes(storage.result_path("iris", WID)) is None
    assert storage.read_json(storage.spec_path("nope")) is None


def test_delete(storage: Storage) -> None:
    path = storage.queue_path("iris", WID)
    storage.write_bytes(path, b"x")
    storage.delete(path)
    assert storage.read_bytes(path) is None
    assert not storage.exists(path)
    storage.delete(path)  # missing is fine
    storage.delete(storage.path("never", "there"))


def test_exists_and_size(storage: Storage) -> None:
    path = storage.payload_path("iris", WID)
    assert not storage.exists(path)
    storage.write_bytes(path, b"12345")
    assert storage.exists(path)
    assert storage.size(path) == 5


def test_list_names(storage: Storage) -> None:
    for api in ("alpha", "beta"):
        storage.write_json(storage.spec_path(api), {"api": api})
    ids = [uuid.uuid4().hex for _ in range(3)]
    for wid in ids:
        storage.write_bytes(storage.queue_path("alpha", wid), b"entry")
    assert sorted(storage.list_names(storage.path("apis"))) == ["alpha", "beta"]
    assert sorted(storage.list_names(storage.path("queue", "alpha"))) == sorted(ids)
    assert storage.list_names(storage.path("queue", "missing")) == []
    named = dict(storage.list_with_mtime(storage.path("queue", "alpha")))
    assert sorted(named) == sorted(ids)


def test_delete_tree(storage: Storage) -> None:
    storage.write_bytes(storage.status_path("iris", WID), b"{}")
    storage.write_bytes(storage.result_path("iris", WID), b"r")
    other = uuid.uuid4().hex
    storage.write_bytes(storage.result_path("iris", other), b"keep")
    storage.delete_tree(storage.path("workloads", "iris", WID))
    assert storage.read_bytes(storage.status_path("iris", WID)) is None
    assert storage.read_bytes(storage.result_path("iris", WID)) is None
    assert storage.read_bytes(storage.result_path("iris", other)) == b"keep"
    assert storage.list_names(storage.path("workloads", "iris")) == [other]
    storage.delete_tree(storage.path("workloads", "nothing-here"))  # missing is fine


def test_streaming_open_write_and_read(storage: Storage) -> None:
    path = storage.payload_path("iris", WID)
    chunks = [os.urandom(1000) for _ in range(5)]
    with storage.open_write(path) as f:
        for chunk in chunks:
            f.write(chunk)
    assert storage.size(path) == 5000
    with storage.open_read(path) as f:
        assert f.read(1000) == chunks[0]
        assert f.read() == b"".join(chunks[1:])


def test_describe_round_trip(storage: Storage) -> None:
    storage.write_bytes(storage.result_path("iris", WID), b"shared")
    description = storage.describe()
    assert description["url"] == storage.url
    reopened = storage_from_description(description)
    assert reopened.root == storage.root
    assert reopened.read_bytes(reopened.result_path("iris", WID)) == b"shared"
    assert storage_from_description(dict(description)) is reopened


def test_paths_stay_under_the_root(storage: Storage) -> None:
    paths = [
        storage.spec_path("iris"),
        storage.predictor_path("iris", 2),
        storage.queue_path("iris", WID),
        storage.payload_path("iris", WID),
        storage.status_path("iris", WID),
        storage.result_path("iris", WID),
        storage.outbox_path("iris", WID),
    ]
    for path in paths:
        assert path.startswith(storage.root + "/")
        assert ".." not in path.split("/")
    assert len(set(paths)) == len(paths)
    assert storage.predictor_path("iris", 2).endswith("/apis/iris/v2.pkl")
    assert storage.outbox_path("iris", WID).endswith(f"/outbox/iris/{WID}.json")


def test_shared_across_processes_flag(storage: Storage) -> None:
    assert storage.shared_across_processes is (storage.protocol != "memory")


# local-only behaviour ---------------------------------------------------------------------------


def test_write_bytes_leaves_no_tmp_file(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    for i in range(5):
        storage.write_bytes(storage.status_path("iris", WID), f"v{i}".encode())
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert storage.read_bytes(storage.status_path("iris", WID)) == b"v4"


def test_list_names_hides_in_flight_tmp_files(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    storage.write_bytes(storage.queue_path("iris", WID), b"x")
    Path(storage.queue_path("iris", WID + ".abcd1234.tmp")).write_bytes(b"partial")
    assert storage.list_names(storage.path("queue", "iris")) == [WID]


def test_plain_and_home_paths_become_absolute_file_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = Storage("rel/store")
    assert relative.url == f"file://{tmp_path / 'rel' / 'store'}"
    assert relative.is_local and (tmp_path / "rel" / "store").is_dir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = Storage("file://~/store/")
    assert home.url == f"file://{tmp_path / 'home' / 'store'}"
    assert home.root == str(tmp_path / "home" / "store")
