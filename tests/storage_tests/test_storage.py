import os
import sqlite3

import pytest
import torch

from automoe.errors import AutomoeError, StorageError
from automoe.models import create_model
from automoe.storage import (
    AtomicFileSystemArtifactStore,
    atomic_write,
    load_checkpoint,
    load_study,
    open_storage,
    save_checkpoint,
)


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path):
    model = create_model("resnet8", in_channels=1, image_size=8, placement="all", num_experts=3,
                         top_k=2, width_multiplier=0.5).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"metrics": {"acc": 1.0}})
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left
    loaded, meta = load_checkpoint(path)
    assert meta["extra"] == {"metrics": {"acc": 1.0}} and loaded.config == model.config
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(AutomoeError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.safetensors")


def test_sqlite_storage_uses_wal_and_reports_bad_urls(tmp_path):
    db = tmp_path / "s.db"
    open_storage(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(StorageError, match="invalid storage URL"):
        open_storage("not a url")
    with pytest.raises(StorageError, match="unknown database 'nosuchdb'"):
        open_storage("nosuchdb://localhost/x")
    with pytest.raises(StorageError, match="no study database"):
        open_storage(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    with pytest.raises(StorageError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'no' / 'dir.db'}")
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "no").exists()


def test_unreachable_server_is_one_clear_error():
    # port 9 (discard) on loopback: nothing listens there
    with pytest.raises(StorageError, match="cannot open storage postgresql://u:\\*\\*\\*@"):
        open_storage("postgresql://u:secret@127.0.0.1:9/db")


def test_load_study_by_name_or_the_only_one(tmp_path):
    import optuna

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(StorageError, match="no study yet"):
        load_study(storage, None)
    optuna.create_study(storage=storage, study_name="a")
    assert load_study(storage, None).study_name == "a"
    optuna.create_study(storage=storage, study_name="b")
    with pytest.raises(StorageError, match="several studies.*a, b"):
        load_study(storage, None)
    # or the most recently active: b, with no trial, is newer than a, which has none either
    assert load_study(storage, None, most_recent=True).study_name == "b"
    optuna.load_study(study_name="a", storage=storage).optimize(lambda t: 0.0, n_trials=1)
    assert load_study(storage, None, most_recent=True).study_name == "a"
    optuna.load_study(study_name="b", storage=storage).optimize(lambda t: 0.0, n_trials=1)
    assert load_study(storage, None, most_recent=True).study_name == "b"
    with pytest.raises(StorageError, match="no study named 'c'"):
        load_study(storage, "c")


def test_artifact_store_writes_whole_files_only(tmp_path):
    store = AtomicFileSystemArtifactStore(tmp_path / "art")

    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 1:
                raise OSError("disk vanished")
            return b"x" * 10

    with pytest.raises(OSError):
        store.write("abc", Broken())
    assert os.listdir(tmp_path / "art") == []
    import io

    store.write("abc", io.BytesIO(b"hello"))
    assert (tmp_path / "art" / "abc").read_bytes() == b"hello"


def test_atomic_write_replaces_whole_or_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "result.json"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json"
        tmp.write_text("first")
    assert target.read_text() == "first"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual mode, not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_two_processes_creating_one_sqlite_schema_is_retried(tmp_path, monkeypatch):
    # Both checked for the tables before either created them: the loser's CREATE TABLE
    # fails with "already exists"; opening again finds the schema whole.
    import sqlalchemy

    url = f"sqlite:///{tmp_path / 'race.db'}"
    open_storage(url).engine.dispose()  # the other process won: the schema exists
    real = sqlalchemy.MetaData.create_all
    calls = []

    def lose_the_race_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError(
                "CREATE TABLE study_directions", {}, Exception("table study_directions "
                                                               "already exists"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(sqlalchemy.MetaData, "create_all", lose_the_race_once)
    storage = open_storage(url, create=False)
    assert len(calls) == 2 and storage.get_all_studies() == []
    storage.engine.dispose()


def test_an_artifact_dir_that_cannot_be_written_is_refused_in_one_line(tmp_path):
    from automoe.errors import StorageError
    from automoe.storage import AtomicFileSystemArtifactStore

    (tmp_path / "ok").mkdir()
    AtomicFileSystemArtifactStore(tmp_path / "ok").check_writable()
    assert list((tmp_path / "ok").iterdir()) == []  # the probe is removed
    AtomicFileSystemArtifactStore(tmp_path / "new" / "art").check_writable()
    assert not (tmp_path / "new").exists()  # and so are the folders it had to create
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StorageError, match="artifact dir .*a-file/sub is not writable: "):
        AtomicFileSystemArtifactStore(tmp_path / "a-file" / "sub").check_writable()
