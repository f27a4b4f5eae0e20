"""Datasets with configs (download.config, download.data_dir): WikiText-2 as the seed's Lab1 read it, and FineWeb's samples.

The Hub is unreachable here, so both are folders laid out like their Hub repositories
(README.md YAML `configs:`, parquet files per config), with text from the built-in corpus.
"""

import itertools

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from bench.lab1_reference import group_texts
from causal_lm_data.errors import UserError
from causal_lm_data.format import read_table
from causal_lm_data.pipeline.inputs import Input
from causal_lm_data.pipeline.params import load_params, validate
from causal_lm_data.pipeline.readers import builtin_documents, dataset_options, load_batches, local_files
from causal_lm_data.tokenizer import load_tokenizer
from tests.helpers import REPO, metrics, run, set_download_params, stage_command, stage_error

WIKITEXT_CONFIGS = ["wikitext-103-raw-v1", "wikitext-103-v1", "wikitext-2-raw-v1", "wikitext-2-v1"]


def wikitext_rows(paragraphs):
    """Rows shaped like WikiText's: ` = Title = ` and ` = = Section = = ` lines between blank rows, then paragraph lines."""
    rows = []
    for article, start in enumerate(range(0, len(paragraphs), 12)):
        chunk = paragraphs[start : start + 12]
        rows += ["", f" = {' '.join(chunk[0].split()[:4])} {article} = \n", ""]
        for number, paragraph in enumerate(chunk):
            if number and number % 4 == 0:
                rows += ["", f" = = Section {number // 4} = = \n", ""]
            rows.append(f" {paragraph} \n")
    return rows


def write_wikitext_like_repo(root):
    """A folder laid out like the Hub's Salesforce/wikitext: four configs, three splits each, one parquet file per split.

    Each config and split holds different paragraphs, so reading the wrong one shows.
    wikitext-2-raw-v1's train split is 1,300 paragraphs (2,275 rows) in row groups of 400 rows
    (the parallel path converts several), one of them longer than 512 tokens.
    """
    paragraphs = iter(builtin_documents())
    readme = "---\nconfigs:\n"
    for config in WIKITEXT_CONFIGS:
        readme += f"- config_name: {config}\n  data_files:\n"
        (root / config).mkdir(parents=True)
        for split in ("test", "train", "validation"):
            readme += f"  - split: {split}\n    path: {config}/{split}-*\n"
            count = 1300 if (config, split) == ("wikitext-2-raw-v1", "train") else 20
            chosen = list(itertools.islice(paragraphs, count))
            if count == 1300:
                chosen[100] = " ".join(chosen[100:140])  # about 1,500 tokens: truncated at 512
            rows = wikitext_rows(chosen)
            pq.write_table(pa.table({"text": rows}), root / config / f"{split}-00000-of-00001.parquet", row_group_size=400)
    (root / "README.md").write_text(readme + "---\n")
    return root


def write_fineweb_like_repo(root):
    """A folder laid out like the Hub's HuggingFaceFW/fineweb: a `default` config of every dump, and samples."""
    readme = (
        "---\nconfigs:\n"
        "- config_name: default\n  data_files:\n  - split: train\n    path: data/*/*\n"
        "- config_name: sample-10BT\n  data_files:\n  - split: train\n    path: sample/10BT/*\n"
        "- config_name: sample-100BT\n  data_files:\n  - split: train\n    path: sample/100BT/*\n"
        "- config_name: CC-MAIN-2024-10\n  data_files:\n  - split: train\n    path: data/CC-MAIN-2024-10/*\n"
        "---\n"
    )
    root.mkdir(parents=True)
    (root / "README.md").write_text(readme)
    paragraphs = builtin_documents()
    files = {}
    for folder, names in {
        "data/CC-MAIN-2024-10": ["000_00000.parquet"],
        "data/CC-MAIN-2013-20": ["000_00000.parquet"],
        "sample/10BT": ["000_00000.parquet", "001_00000.parquet"],
        "sample/100BT": ["000_00000.parquet"],
    }.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            texts = list(itertools.islice(paragraphs, 50))
            table = pa.table(
                {
                    "text": texts,
                    "id": [f"<urn:uuid:{folder}-{i}>" for i in range(50)],
                    "dump": [folder] * 50,
                    "url": [f"https://example.com/{i}" for i in range(50)],
                    "language": ["en"] * 50,
                    "language_score": [0.9] * 50,
                    "token_count": [len(text.split()) for text in texts],
                }
            )
            pq.write_table(table, root / folder / name)
            files[f"{folder}/{name}"] = texts
    return root, files


def texts_of(batches):
    return [text for batch in batches for text in batch.column("text").to_pylist()]


def test_wikitext_2_raw_runs_through_the_pipeline_as_lab1_tokenized_and_grouped_it(repo_clone, tmp_path):
    wikitext = write_wikitext_like_repo(tmp_path / "wikitext")
    run(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "download.dataset=local",
            "-S",
            f"download.local_path={wikitext}",
            "-S",
            "download.config=wikitext-2-raw-v1",
            "-S",
            "tokenize.tokenizer=gpt2",
        ],
        cwd=repo_clone,
    )
    # Lab1: load_dataset("wikitext", "wikitext-2-raw-v1", split="train"), GPT-2, map(truncation=True, max_length=512).
    lab1 = datasets.load_dataset(str(wikitext), "wikitext-2-raw-v1", split="train", cache_dir=str(tmp_path / "cache"))
    tokenizer = load_tokenizer("gpt2")
    tokenized = lab1.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=512),
        batched=True,
        remove_columns=lab1.column_names,
    )
    empty = lab1["text"].count("")
    assert empty > 300 and len(lab1) > 1000  # WikiText's blank rows, over more than one of Lab1's 1,000-row map batches
    download = metrics(repo_clone, "download")
    assert download["documents"] == len(lab1) - empty and download["empty_documents_skipped"] == empty
    assert download["source"] == f"{wikitext} (local, config 'wikitext-2-raw-v1')"
    assert read_table(repo_clone / "data/raw", "download").column("text").to_pylist() == [t for t in lab1["text"] if t]

    # The same token stream: Lab1 tokenizes an empty row to no tokens; we skip it.
    ours = read_table(repo_clone / "data/tokenized", "tokenize").column("input_ids").to_pylist()
    assert ours == [ids for ids in tokenized["input_ids"] if ids]
    assert max(map(len, ours)) == 512
    # The same blocks where Lab1's group_texts sees the whole stream at once (its 1,000-row
    # batches would each drop a remainder; we drop only the final one).
    lab1_blocks = tokenized.map(group_texts, batched=True, batch_size=None, remove_columns=["attention_mask"])
    blocks = read_table(repo_clone / "data/grouped", "group").column("input_ids").to_pylist()
    assert blocks == lab1_blocks["input_ids"] and len(blocks) > 100


def test_a_configs_parquet_files_are_converted_in_parallel_as_the_stream_reads_them(tmp_path):
    wikitext = write_wikitext_like_repo(tmp_path / "wikitext")
    source = Input("local", str(wikitext), "main")
    for config in WIKITEXT_CONFIGS:
        for split in ("train", "validation"):
            files = local_files(source, split, config=config).files
            assert files == [wikitext / config / f"{split}-00000-of-00001.parquet"]
            batches, _ = load_batches(source, split, name=config)
            assert texts_of(batches) == pq.read_table(files[0]).column("text").to_pylist()
    # data_dir narrows the files: it overrides the config's file list, as load_dataset does.
    files = local_files(source, "test", config="wikitext-2-raw-v1", data_dir="wikitext-2-v1").files
    assert files == [wikitext / "wikitext-2-v1" / "test-00000-of-00001.parquet"]
    batches, _ = load_batches(source, "test", name="wikitext-2-raw-v1", data_dir="wikitext-2-v1")
    assert texts_of(batches) == pq.read_table(files[0]).column("text").to_pylist()


def test_fineweb_sample_10bt_is_chosen_by_config_and_default_reads_every_dump(tmp_path):
    fineweb, files = write_fineweb_like_repo(tmp_path / "fineweb")
    source = Input("local", str(fineweb), "main")
    sample = ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet"]
    assert local_files(source, "train", config="sample-10BT").files == [fineweb / name for name in sample]
    batches, _ = load_batches(source, "train", name="sample-10BT")
    assert texts_of(batches) == files[sample[0]] + files[sample[1]]
    default = sorted(local_files(source, "train").files)
    assert default == [fineweb / "data/CC-MAIN-2013-20/000_00000.parquet", fineweb / "data/CC-MAIN-2024-10/000_00000.parquet"]
    batches, _ = load_batches(source, "train")
    assert sorted(texts_of(batches)) == sorted(
        files["data/CC-MAIN-2013-20/000_00000.parquet"] + files["data/CC-MAIN-2024-10/000_00000.parquet"]
    )


def test_fineweb_sample_through_the_download_stage(repo_clone, tmp_path):
    fineweb, files = write_fineweb_like_repo(tmp_path / "fineweb")
    set_download_params(repo_clone, dataset="local", local_path=str(fineweb), config="sample-10BT")
    run(stage_command("download", repo_clone), cwd=repo_clone)
    raw = read_table(repo_clone / "data/raw", "download").column("text").to_pylist()
    assert raw == files["sample/10BT/000_00000.parquet"] + files["sample/10BT/001_00000.parquet"]


def test_config_mistakes_are_one_line_naming_every_config(repo_clone, tmp_path):
    wikitext = write_wikitext_like_repo(tmp_path / "wikitext")
    every = ", ".join(WIKITEXT_CONFIGS)
    assert stage_error(repo_clone, dataset="local", local_path=str(wikitext)) == (
        f"error: dataset '{wikitext}' has 4 configs and none is chosen: set download.config to one of: {every}\n"
    )
    assert stage_error(repo_clone, config="wikitext-2") == (
        f"error: dataset '{wikitext}' has no config 'wikitext-2': set download.config to one of: {every}\n"
    )
    corpus = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": ["one"]}), corpus)
    assert "download.config choose within a Hub dataset or a folder" in stage_error(repo_clone, local_path=str(corpus))
    assert not (repo_clone / "data/raw").exists()


def test_a_hub_id_with_a_config_names_repo_config_and_revision_when_offline(repo_clone):
    error = stage_error(repo_clone, dataset="wikitext", config="wikitext-2-raw-v1")
    assert error.startswith("error: cannot resolve Hub dataset 'wikitext' (config 'wikitext-2-raw-v1') at revision 'main': ")


def test_config_and_data_dir_are_refused_where_there_is_nothing_to_choose():
    params = {"config": "wikitext-2-raw-v1", "data_dir": None}
    with pytest.raises(UserError, match="download.config choose within a Hub dataset .* not 'sotu-paragraphs'"):
        dataset_options(Input("builtin", "sotu-paragraphs", "main"), params)
    assert dataset_options(Input("hub", "wikitext", "main"), params) == {"name": "wikitext-2-raw-v1"}
    assert dataset_options(Input("hub", "wikitext", "main"), {"config": "", "data_dir": "sample"}) == {"data_dir": "sample"}


@pytest.mark.parametrize("value, accepted", [(None, True), ("", True), ("sample-10BT", True), (5, False), (["a"], False)])
def test_config_params_may_be_null_or_empty(value, accepted):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["download"]["config"] is None and params["download"]["data_dir"] is None
    params["download"]["config"] = value
    if accepted:
        assert validate(params)["download"]["config"] == value
    else:
        with pytest.raises(UserError, match="'download.config' must be str or null"):
            validate(params)


@pytest.mark.parametrize("override, expected", [("wikitext-2-raw-v1", "wikitext-2-raw-v1"), ("", ""), ("null", None)])
def test_dvc_sets_and_resets_a_config_from_the_command_line(tmp_path, override, expected):
    """What `dvc exp run -S download.config=...` writes (DVC's own override code) is valid: '' and null mean the default."""
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    apply_overrides(params, [f"download.config={override}"])
    assert load_params("download", params)["config"] == expected
