import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from causal_lm_data.errors import UserError
from causal_lm_data.pipeline.inputs import Input
from causal_lm_data.pipeline.raw import held_out, text_of
from causal_lm_data.pipeline.readers import builtin_documents, load_batches
from tests.helpers import write_imdb_like_repo


def local_batches(path, split="train"):
    """The Arrow batches of a local corpus, as the download stage reads them."""
    batches, version = load_batches(Input("local", str(path), "main"), split)
    return list(batches)


def test_builtin_corpus_is_the_paragraphs_of_every_address():
    documents = list(builtin_documents())
    assert len(documents) == 25_488
    assert sum(map(len, documents)) == 12_130_615
    assert documents[0] == "Fellow-Citizens of the Senate and House of Representatives:"
    assert all(doc == doc.strip() and doc for doc in documents)


def test_builtin_corpus_has_only_train():
    with pytest.raises(UserError, match="is a single split, .train."):
        load_batches(Input("builtin", "sotu-paragraphs", "main"), "test")


def test_text_of_skips_and_counts_empty_documents():
    texts, empty = text_of(pa.table({"text": ["a", "", "b", ""], "label": [1, 2, 3, 4]}), "text")
    assert texts.to_pylist() == ["a", "b"] and empty == 2


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"review": ["a"], "label": [1]}), "no column 'text'; set download.text_column to one of: review, label"),
        (pa.table({"text": [1, 2]}), "column 'text' holds int64, not text"),
        (pa.table({"text": ["a", None, None]}), "column 'text' has 2 missing"),
    ],
)
def test_bad_text_columns(table, message):
    with pytest.raises(UserError, match=message):
        text_of(table, "text")


def test_hub_layout_folder_loads_through_datasets(tmp_path):
    texts = [f"review number {i}" for i in range(25)]
    repo = write_imdb_like_repo(tmp_path / "imdb", texts)
    loaded = [text_of(batch, "text")[0] for batch in local_batches(repo)]
    assert pa.concat_arrays(loaded).to_pylist() == texts
    loaded = [text_of(batch, "text")[0] for batch in local_batches(repo, "test")]
    assert pa.concat_arrays(loaded).to_pylist() == ["test review"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl", ".json", ".txt"])
def test_local_files(tmp_path, suffix):
    texts = ["first document", "second, with a comma", "third"]
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table({"text": texts}), path)
    elif suffix == ".csv":
        path.write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
    elif suffix in (".jsonl", ".json"):
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    else:
        path.write_text("\n".join(texts) + "\n")
    loaded = [text_of(batch, "text")[0] for batch in local_batches(path)]
    assert pa.concat_arrays(loaded).to_pylist() == texts


def test_unreachable_or_unknown_datasets_are_one_line_errors(tmp_path):
    (tmp_path / "notes.docx").write_text("x")
    (tmp_path / "empty-folder").mkdir()
    for source, message in [
        (Input("local", str(tmp_path / "notes.docx"), "main"), "cannot read .* use one of .parquet"),
        (Input("hub", "imdb", "main"), "cannot resolve Hub dataset 'imdb' at revision 'main'"),
        (Input("local", str(tmp_path / "empty-folder"), "main"), "cannot load dataset"),
    ]:
        with pytest.raises(UserError, match=message) as error:
            list(load_batches(source, "train")[0])
        assert "\n" not in str(error.value)


def test_held_out_documents_are_a_seeded_exact_share():
    mask = held_out(1000, 0.1, seed=1)
    assert mask.sum() == 100 and mask.dtype == bool
    assert (held_out(1000, 0.1, seed=1) == mask).all() and not (held_out(1000, 0.1, seed=2) == mask).all()
    assert held_out(1000, 7, seed=1).sum() == 7
    for size, message in [(1.0, "fraction below 1"), (1000, "both splits"), (0.0001, "both splits")]:
        with pytest.raises(UserError, match=message):
            held_out(1000, size, seed=1)


def test_a_parquet_file_converts_in_parallel_into_the_same_shards(tmp_path, monkeypatch):
    """Row groups of every size (one all empty, one larger than a shard) give identical shards for 1 and 2 workers."""
    from causal_lm_data.format import read_table, shards
    from causal_lm_data.pipeline.progress import Progress
    from causal_lm_data.pipeline.raw import convert_files, new_counts

    documents = [f"document {i} " * (i % 37) for i in range(3_000)]  # every 37th is empty
    documents[1_000:1_200] = [""] * 200
    path = tmp_path / "corpus.parquet"
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
        for low, high in [(0, 100), (100, 1_000), (1_000, 1_200), (1_200, 1_250), (1_250, 3_000)]:
            writer.write_table(pa.table({"text": documents[low:high]}))
    outputs, counts = [], []
    for workers in ("1", "2"):
        monkeypatch.setenv("PIPELINE_WORKERS", workers)
        counts.append(new_counts())
        folder = tmp_path / f"raw-{workers}"
        convert_files([path], folder, "text", 64 << 10, counts[-1], Progress("download"))
        outputs.append({file.name: file.read_bytes() for file in folder.iterdir()})
    assert outputs[0] == outputs[1] and counts[0] == counts[1]
    assert len(shards(tmp_path / "raw-2", "download")) >= 4
    assert read_table(tmp_path / "raw-2", "download").column("text").to_pylist() == [d for d in documents if d]
    assert counts[0]["empty_documents_skipped"] == documents.count("")
    # The last row group (1,750 documents, ~6.9 shards of text) is cut in 7 equal parts, not 6 shards and a sliver.
    from causal_lm_data.pipeline.raw import local_tasks
    from causal_lm_data.pipeline.readers import parquet_row_groups

    tasks = local_tasks([path], tmp_path, "text", 64 << 10)
    sizes = [size for _, size in parquet_row_groups(path)]
    assert [part.row_groups for part in tasks[-1].parts] == [(4,)]
    assert 6 * (64 << 10) < sizes[4] < 7 * (64 << 10) and tasks[-1].shard_bytes == -(-sizes[4] // 7)
    # Runs that fit are cut at the shard size itself, not at their footer's estimate of it.
    fitting = [task for task in tasks if sum(sizes[i] for i in task.parts[0].row_groups) <= 64 << 10]
    assert fitting and all(task.shard_bytes == 64 << 10 for task in fitting)


def test_a_hub_layout_folder_of_parquet_files_converts_in_parallel_like_the_stream(tmp_path):
    """Two train files of several row groups: the stage's shards are the same for 1 and 2 workers, the texts the stream's."""
    from causal_lm_data.format import read_table
    from tests.helpers import REPO, run, stage_command, write_params

    repo = write_imdb_like_repo(tmp_path / "imdb", ["placeholder"])
    texts = [f"review {i} " * (i % 50) for i in range(4_000)]  # every 50th empty
    for number, part in enumerate((texts[:2_500], texts[2_500:])):
        pq.write_table(
            pa.table({"text": part, "label": [0] * len(part)}),
            repo / "plain_text" / f"train-0000{number}-of-00002.parquet",
            row_group_size=300,
        )
    (repo / "plain_text" / "train-00000-of-00001.parquet").unlink()
    streamed = [text for batch in local_batches(repo) for text in text_of(batch, "text")[0].to_pylist()]
    from causal_lm_data.pipeline.readers import local_files

    files = local_files(Input("local", str(repo), "main"), "train").files
    assert [file.name for file in files] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert local_files(Input("local", str(repo), "main"), "test").files[0].name == "test-00000-of-00001.parquet"
    outputs = []
    for workers in ("1", "2"):
        work = tmp_path / f"work-{workers}"
        work.mkdir()
        write_params(work, download__dataset="local", download__local_path=str(repo), download__shard_mb=1)
        run(stage_command("download", work), cwd=work, PYTHONPATH=str(REPO), PIPELINE_WORKERS=workers)
        outputs.append({path.name: path.read_bytes() for path in (work / "data" / "raw").iterdir()})
        assert json.loads((work / "metrics" / "download.json").read_text())["empty_documents_skipped"] == 80
    assert outputs[0] == outputs[1]
    assert (
        read_table(tmp_path / "work-2" / "data" / "raw", "download").column("text").to_pylist()
        == streamed
        == [t for t in texts if t]
    )
