"""Compressed and JSON inputs are read whole or refused in one line naming the file: cut, tiny, empty, pzstd, deep, long."""

import bz2
import gzip
import io
import json
import lzma
import struct
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from causal_lm_data.errors import UserError
from causal_lm_data.pipeline import formats
from causal_lm_data.pipeline.formats import estimated_bytes, json_batches, text_batches
from causal_lm_data.pipeline.inputs import Input
from causal_lm_data.pipeline.raw import local_tasks
from causal_lm_data.pipeline.readers import file_batches, load_batches, parquet_row_groups
from tests.helpers import (
    BUCKET,
    CREDENTIALS,
    assert_clean_failure,
    local,
    metrics,
    raw_texts,
    run,
    set_download_params,
    stage_command,
    stage_in,
)
from tests.test_remote_inputs import upload

COMPRESSORS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),
}
CUT_SHORT = "corrupt or truncated compressed data"
AFTER_THE_LAST = "corrupt compressed data after its zstd frame 1 (from byte "


def lines_of(count: int, tag: str = "document") -> list[str]:
    return [f"{tag} {i} " + "word " * (i % 13) for i in range(count)]


def jsonl(texts, **extra) -> bytes:
    return "".join(json.dumps({"text": t, **extra}) + "\n" for t in texts).encode()


def text_file(texts) -> bytes:
    return "".join(t + "\n" for t in texts).encode()


def read_as_the_stage_does(path) -> list[str]:
    """Plan the file as download does (its estimated size, a parquet footer), then read every document."""
    if path.name.endswith(".parquet"):
        parquet_row_groups(path)
    local_tasks([path], path.parent / "out", "text", 1 << 20)
    return [text for table in file_batches(path, "text") for text in table.column("text").to_pylist()]


def refusal(path) -> str:
    """The one-line UserError reading `path` stops with."""
    with pytest.raises(UserError) as error:
        read_as_the_stage_does(path)
    message = str(error.value)
    assert "\n" not in message and path.name in message, message
    return message


def skippable(payload: bytes, magic: int = 0x184D2A50) -> bytes:
    return struct.pack("<II", magic, len(payload)) + payload


# 1. A file cut short is refused in every compression, zstd as gzip, bz2 and xz are.


@pytest.mark.parametrize("ending", list(COMPRESSORS))
def test_a_text_file_cut_at_two_thirds_is_refused_in_every_compression(tmp_path, ending):
    whole = COMPRESSORS[ending](text_file(lines_of(50_000)))
    path = tmp_path / f"corpus.txt{ending}"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    assert CUT_SHORT in refusal(path)
    path.write_bytes(whole)
    assert read_as_the_stage_does(path) == lines_of(50_000)


def zstd_flushed_at(texts: list[str], every: int) -> tuple[bytes, list[int]]:
    """One zstd frame whose blocks end at line ends (flushed every `every` records), and where each block ends."""
    compressor = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    data, ends = b"", []
    for start in range(0, len(texts), every):
        data += compressor.compress(jsonl(texts[start : start + every]))
        data += compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        ends.append(len(data))
    return data + compressor.flush(), ends


def test_zstd_cut_where_a_block_frame_or_checksum_ends_is_refused(tmp_path):
    texts = lines_of(3_000)
    frame, block_ends = zstd_flushed_at(texts, 1_500)
    two_frames = b"".join(zstandard.ZstdCompressor(write_checksum=True).compress(jsonl(texts[i : i + 1_500])) for i in (0, 1_500))
    first_frame = len(zstandard.ZstdCompressor(write_checksum=True).compress(jsonl(texts[:1_500])))
    cuts = {
        "block.jsonl.zst": frame[: block_ends[0]],  # every line of the first 1,500 whole: no JSON error to notice
        "header.jsonl.zst": two_frames[: first_frame + 6],  # the second frame's header alone
        "checksum.jsonl.zst": frame[:-4],  # every document there, the frame's end missing
        "magic.jsonl.zst": frame[:4],
    }
    for name, data in cuts.items():
        (tmp_path / name).write_bytes(data)
        assert CUT_SHORT in refusal(tmp_path / name), name
    (tmp_path / "whole.jsonl.zst").write_bytes(frame)
    (tmp_path / "frames.jsonl.zst").write_bytes(two_frames)
    assert read_as_the_stage_does(tmp_path / "whole.jsonl.zst") == texts
    assert read_as_the_stage_does(tmp_path / "frames.jsonl.zst") == texts


def test_the_stage_refuses_a_cut_zstd_file_in_one_line(tmp_path):
    whole = zstandard.ZstdCompressor().compress(text_file(lines_of(50_000)))
    (tmp_path / "corpus.txt.zst").write_bytes(whole[: len(whole) * 2 // 3])
    result = stage_in(tmp_path, "download", **local(tmp_path / "corpus.txt.zst"))
    assert_clean_failure(result, tmp_path, "data/raw", f"cannot read {tmp_path / 'corpus.txt.zst'}: {CUT_SHORT}")


def test_a_cut_remote_zstd_file_is_refused_naming_the_object(repo_clone, s3):
    whole = zstandard.ZstdCompressor().compress(text_file(lines_of(50_000)))
    upload(s3, "cut/corpus.txt.zst", whole[: len(whole) * 2 // 3])
    url = f"s3://{BUCKET}/cut/corpus.txt.zst"
    set_download_params(repo_clone, dataset="local", local_path=url)
    result = run(stage_command("download", repo_clone), cwd=repo_clone, check=False, AWS_ENDPOINT_URL=s3.url, **CREDENTIALS)
    assert result.returncode == 1 and result.stderr.startswith(f"error: cannot read {url}: {CUT_SHORT}"), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "lm-data-remote-" not in result.stderr
    assert not (repo_clone / "data/raw").exists()


# 2. Skippable frames (pzstd) and concatenated frames are zstd: read whole; bytes after the last frame are refused.


def pzstd_like(texts: list[str], parts: int) -> bytes:
    """As pzstd writes: each frame preceded by a skippable frame holding its compressed size."""
    size = -(-len(texts) // parts)
    frames = [zstandard.ZstdCompressor().compress(jsonl(texts[i : i + size])) for i in range(0, len(texts), size)]
    return b"".join(skippable(struct.pack("<I", len(frame))) + frame for frame in frames)


def test_pzstd_files_and_skippable_frames_anywhere_are_read_whole(tmp_path):
    texts = lines_of(9_000, "pzstd")
    compress = zstandard.ZstdCompressor().compress
    files = {
        "pzstd.jsonl.zst": pzstd_like(texts, 3),
        # Skippable frames of every magic (0x184D2A50-0x184D2A5F), empty or not, between and after data frames.
        "mixed.jsonl.zst": skippable(b"", 0x184D2A5F)
        + compress(jsonl(texts[:4_000]))
        + skippable(b"\x00" * 300, 0x184D2A57)
        + compress(jsonl(texts[4_000:]))
        + skippable(b"index", 0x184D2A53),
        "sniffed.jsonl": pzstd_like(texts, 2),  # a plain ending: sniffed as zstd by its first (skippable) frame
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert read_as_the_stage_does(tmp_path / name) == texts, name
    # The size the data frame records, past the skippable frame before it: the plan's estimate.
    (tmp_path / "one.jsonl.zst").write_bytes(pzstd_like(texts, 1))
    assert estimated_bytes(tmp_path / "one.jsonl.zst") == len(jsonl(texts))


def test_a_file_written_by_the_real_pzstd_is_read(tmp_path):
    texts = lines_of(20_000, "real")
    (tmp_path / "corpus.jsonl").write_bytes(jsonl(texts))
    try:
        run(["pzstd", "-q", "-p", "2", str(tmp_path / "corpus.jsonl"), "-o", str(tmp_path / "corpus.jsonl.zst")], cwd=tmp_path)
    except FileNotFoundError:
        pytest.skip("pzstd is not installed (apt-get install zstd); the skippable frames are built by hand above")
    assert read_as_the_stage_does(tmp_path / "corpus.jsonl.zst") == texts


@pytest.mark.parametrize(
    "after, message",
    [
        (b"garbage after the frame\n", AFTER_THE_LAST),
        (b"\x00", AFTER_THE_LAST),
        (b"\x28\xb5\x2f", CUT_SHORT),  # the start of a magic number: a frame cut short
        (gzip.compress(b"more\n"), AFTER_THE_LAST),
        (skippable(b"payload")[:-3], CUT_SHORT),  # a skippable frame cut short
    ],
)
def test_bytes_after_the_last_zstd_frame_are_refused(tmp_path, after, message):
    (tmp_path / "corpus.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(text_file(lines_of(100))) + after)
    assert message in refusal(tmp_path / "corpus.txt.zst")


@pytest.mark.parametrize("ending", list(COMPRESSORS))
def test_concatenated_streams_are_read_whole_and_bytes_after_the_last_refused_in_every_compression(tmp_path, ending):
    compress, first, second = COMPRESSORS[ending], lines_of(1_000, "first"), lines_of(1_000, "second")
    path = tmp_path / f"corpus.txt{ending}"
    path.write_bytes(compress(text_file(first)) + compress(text_file(second)))
    assert read_as_the_stage_does(path) == first + second
    # BZ2File and LZMAFile stopped silently at bytes that start no stream; gzip refused them already.
    for after in (b"garbage after the last stream\n", b"\x01\x02\x03\x04"):
        path.write_bytes(compress(text_file(first)) + after)
        message = refusal(path)
        assert (AFTER_THE_LAST if ending == ".zst" else CUT_SHORT) in message, message


# 3. Tiny, empty and cut-header files: one line naming the file, in every format.


def parquet_bytes(texts) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), buffer)
    return buffer.getvalue()


def test_tiny_empty_and_cut_header_files_are_one_line_naming_them(tmp_path):
    data = text_file(lines_of(200))
    compressed = {ending: compress(data) for ending, compress in COMPRESSORS.items()}
    parquet = parquet_bytes(lines_of(200))
    cases = {
        "empty.txt.gz": b"",
        "empty.jsonl.bz2": b"",
        "empty.json.xz": b"",
        "empty.txt.zst": b"",
        "empty.parquet": b"",
        "three.txt.gz": compressed[".gz"][:3],
        "header.txt.gz": compressed[".gz"][:10],
        "no-trailer.txt.gz": compressed[".gz"][:17],
        "magic.txt.bz2": compressed[".bz2"][:10],
        "header.txt.bz2": compressed[".bz2"][:20],
        "magic.txt.xz": compressed[".xz"][:6],
        "header.txt.xz": compressed[".xz"][:12],
        "four.txt.zst": compressed[".zst"][:4],
        "six.txt.zst": compressed[".zst"][:6],
        "ten.txt.zst": compressed[".zst"][:10],
        "magic.parquet": b"PAR1",
        "head.parquet": parquet[:8],
        "no-footer.parquet": parquet[:-10],
        "cut.jsonl": b'{"te',
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        refusal(tmp_path / name)
    (tmp_path / "empty.jsonl").write_bytes(b"")  # a plain empty file holds no documents, and says so no louder
    assert read_as_the_stage_does(tmp_path / "empty.jsonl") == []


@pytest.mark.parametrize("name, content", [("six.txt.zst", b"\x28\xb5\x2f\xfd\x04\x00"), ("three.jsonl.gz", b"\x1f\x8b\x08")])
def test_the_stage_refuses_a_tiny_compressed_file_in_one_line(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    result = stage_in(tmp_path, "download", **local(tmp_path / name))
    assert_clean_failure(result, tmp_path, "data/raw", f"cannot read {tmp_path / name}: {CUT_SHORT}")


# 4. A record nested deeper than the JSON parser reads: one line naming the file and line.


@pytest.mark.parametrize(
    "name, nested, where",
    [
        ("deep.jsonl", b"[" * 100_000 + b"]" * 100_000, "line 2"),
        ("objects.jsonl.gz", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "line 2"),
        ("array.json", None, "record 2 of its array"),
    ],
)
def test_a_json_record_nested_100_000_deep_is_one_line_naming_it(tmp_path, name, nested, where):
    if nested is None:
        content = b'[{"text": "a"},\n{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]"
    else:
        content = b'{"text": "a"}\n' + nested + b"\n"
    if name.endswith(".gz"):
        content = gzip.compress(content)
    (tmp_path / name).write_bytes(content)
    message = refusal(tmp_path / name)
    assert f"{name} {where} nests arrays or objects too deeply for Python's JSON parser" in message


# 5. download.source_field works on a remote JSON file as on the same file here.


def test_source_field_keeps_one_source_of_a_remote_json_file_as_of_a_local_one(repo_clone, s3):
    records = [{"text": text, "meta": {"set": "Github" if i % 3 == 0 else "Wiki"}} for i, text in enumerate(lines_of(300))]
    body = "".join(json.dumps(record) + "\n" for record in records).encode()
    upload(s3, "pile/part.jsonl.zst", zstandard.ZstdCompressor().compress(body))
    (repo_clone / "part.jsonl").write_bytes(body)
    kept = [record["text"] for record in records if record["meta"]["set"] == "Github"]
    for path in [f"s3://{BUCKET}/pile/part.jsonl.zst", str(repo_clone / "part.jsonl")]:
        set_download_params(repo_clone, dataset="local", local_path=path, source_field="meta.set", source_value="Github")
        result = run(stage_command("download", repo_clone), cwd=repo_clone, check=False, AWS_ENDPOINT_URL=s3.url, **CREDENTIALS)
        assert result.returncode == 0, result.stderr
        assert raw_texts(repo_clone) == kept
        assert metrics(repo_clone, "download")["documents_of_other_sources"] == 200
    batches, _ = load_batches(Input("local", str(repo_clone / "part.jsonl"), "main"), "train", source_field="meta.set")
    assert next(batches).column("meta.set").to_pylist() == [record["meta"]["set"] for record in records]


# 6. One very long JSON line reads in linear time, as a text line does.


def best_time(read, path) -> tuple[float, list]:
    times, tables = [], None
    for _ in range(2):
        start = time.perf_counter()
        tables = list(read(path))
        times.append(time.perf_counter() - start)
    return min(times), tables


def long_line_files(folder, megabytes: int) -> str:
    words = " ".join(f"word{i}" for i in range(97)) + " "
    line = (words * ((megabytes << 20) // len(words) + 1))[: megabytes << 20]
    (folder / "long.jsonl").write_text(json.dumps({"text": line}) + "\n" + json.dumps({"text": "next"}) + "\n")
    (folder / "long.txt").write_text(line + "\nnext\n")
    return line


def json_and_text_seconds(folder, line: str) -> tuple[float, float]:
    text_seconds, text_tables = best_time(text_batches, folder / "long.txt")
    json_seconds, json_tables = best_time(lambda path: json_batches(path, "text"), folder / "long.jsonl")
    assert pa.concat_tables(json_tables).column("text").to_pylist() == [line, "next"]
    assert pa.concat_tables(text_tables).column("text").to_pylist() == [line, "next"]
    return json_seconds, text_seconds


def test_a_json_line_of_many_reads_takes_linear_time_as_a_text_line_does(tmp_path, monkeypatch):
    # 40 MB at the real read size (1 MB): read whole and exactly, in about the text reader's time.
    json_seconds, text_seconds = json_and_text_seconds(tmp_path, long_line_files(tmp_path, 40))
    assert json_seconds < 3 * text_seconds, (json_seconds, text_seconds)
    # The same shape at a smaller scale, 8 MB in 512 reads of 16 KB: rescanning (and copying) what is held
    # on every read took ~2 GB of work here, 20x the text reader's time; one pass is about its time.
    monkeypatch.setattr(formats, "_READ_BYTES", 1 << 14)
    json_seconds, text_seconds = json_and_text_seconds(tmp_path, long_line_files(tmp_path, 8))
    assert json_seconds < 3 * text_seconds, (json_seconds, text_seconds)


def test_the_stage_refuses_a_deeply_nested_record_in_one_line(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "part-0.jsonl").write_bytes(jsonl(lines_of(50)))
    (folder / "part-1.jsonl").write_bytes(jsonl(lines_of(50)) + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    result = stage_in(tmp_path, "download", **local(folder))
    assert_clean_failure(result, tmp_path, "data/raw", "part-1.jsonl line 51 nests arrays or objects too deeply")
