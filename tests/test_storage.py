import datasets
import pyarrow as pa
import pytest

from causal_lm_data.errors import UserError
from causal_lm_data.format import read_batches, shard_name, shards
from causal_lm_data.pipeline.command import explain
from causal_lm_data.pipeline.writer import replacing, write_dataset

DATA_FILE = shard_name(0, 1)

SCHEMA = pa.schema([("input_ids", pa.list_(pa.uint16()))])


def batches():
    for start in range(0, 30, 10):
        yield pa.record_batch([pa.array([[start + i] * i for i in range(10)], pa.list_(pa.uint16()))], schema=SCHEMA)


def test_written_dataset_opens_with_datasets_and_round_trips(tmp_path):
    assert write_dataset(tmp_path / "out", SCHEMA, batches()) == 30
    loaded = datasets.load_from_disk(str(tmp_path / "out"))
    assert loaded.features["input_ids"] == datasets.List(datasets.Value("uint16"))
    assert loaded[12]["input_ids"] == [12, 12]
    assert (
        pa.Table.from_batches(read_batches(tmp_path / "out", stage="test")).column("input_ids").to_pylist() == loaded["input_ids"]
    )


def test_shards_close_at_the_first_batch_past_their_size_and_datasets_reads_them_in_order(tmp_path):
    one_batch = next(batches()).nbytes
    assert write_dataset(tmp_path / "out", SCHEMA, batches(), shard_bytes=one_batch + 1) == 30
    assert [shard.path.name for shard in shards(tmp_path / "out", "test")] == [shard_name(0, 2), shard_name(1, 2)]
    loaded = datasets.load_from_disk(str(tmp_path / "out"))
    assert loaded.num_rows == 30 and loaded[29]["input_ids"] == [29] * 9
    single = write_dataset(tmp_path / "single", SCHEMA, batches())
    assert single == 30 and len(shards(tmp_path / "single", "test")) == 1


def test_writing_twice_gives_identical_bytes(tmp_path):
    write_dataset(tmp_path / "a", SCHEMA, batches())
    write_dataset(tmp_path / "b", SCHEMA, batches())
    for name in (DATA_FILE, "state.json", "dataset_info.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corrupt_data_names_the_folder_and_the_stage(tmp_path, damage):
    write_dataset(tmp_path / "out", SCHEMA, batches())
    data = tmp_path / "out" / DATA_FILE
    content = data.read_bytes()
    if damage == "truncate":
        data.write_bytes(content[: len(content) // 2])
    elif damage == "flip":
        data.write_bytes(content[:-100] + bytes([content[-100] ^ 0xFF]) + content[-99:])
    else:
        data.unlink()
    with pytest.raises(UserError, match=r"corrupt or truncated.*the 'tokenize' stage") as error:
        list(read_batches(tmp_path / "out", stage="tokenize"))
    # A stage command words it with the dvc command that rebuilds the folder.
    assert explain(error.value).endswith("rebuild it with: dvc repro --force --single-item tokenize")


def test_missing_folder_names_the_stage(tmp_path):
    with pytest.raises(UserError, match="run the 'group' stage first"):
        list(read_batches(tmp_path / "nothing", stage="group"))


def test_replacing_keeps_nothing_from_a_failed_write(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with replacing(target) as partial:
            write_dataset(partial, SCHEMA, batches())
            raise RuntimeError("stage failed")
    # Only the lock file stays (git-ignored): removing it could let two runs lock two files.
    assert [p.name for p in tmp_path.iterdir()] == [".out.lock"]
    with replacing(target) as partial:
        write_dataset(partial, SCHEMA, batches())
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_replacing_refuses_a_second_writer_of_the_same_output(tmp_path):
    with replacing(tmp_path / "out") as partial:
        write_dataset(partial, SCHEMA, batches())
        with pytest.raises(UserError, match="another run is writing .*out right now"):
            with replacing(tmp_path / "out"):
                pass
        assert (partial / "state.json").exists()  # the refused writer touched nothing
    assert (tmp_path / "out" / "state.json").exists()


def test_a_corpus_stage_names_the_stage_of_its_own_corpus(tmp_path, monkeypatch):
    """Under foreach (corpus-tokenize@web), the fix names the stage that wrote that corpus' folder."""
    with pytest.raises(UserError) as error:
        list(read_batches(tmp_path / "missing", stage="download"))
    monkeypatch.setenv("DVC_STAGE", "corpus-tokenize@web")
    assert explain(error.value).endswith("run the 'corpus-download@web' stage first: dvc repro corpus-download@web")
    monkeypatch.setenv("DVC_STAGE", "tokenize")
    assert explain(error.value).endswith("run the 'download' stage first: dvc repro download")
