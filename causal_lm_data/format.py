"""The data folders' format: the one specification that the stages write and the loader reads.

Every folder under data/ is what `datasets.Dataset.save_to_disk` writes, so
`datasets.load_from_disk` opens it, but written without `datasets` and byte for
byte reproducibly:

    data/grouped/                      (the same for data/raw and data/tokenized)
      data-00000-of-00003.arrow        Arrow IPC streams ("shards"), in order
      ...
      state.json                       {"_data_files": [{"filename", "rows", "sha256"}, ...],
                                        "_fingerprint": sha256 of the shards' sha256s (16 hex digits), ...}
      dataset_info.json                the `datasets` features of the columns

With a validation split (download.validation_size), the folder holds `train/` and
`validation/`, each laid out as above, and `dataset_dict.json` = {"splits": [...]}.

Columns:
- data/raw: `text` (string), one document per row, none empty.
- data/tokenized: `input_ids` (list of uint8/16/32: the smallest type that holds the
  tokenizer's largest id), one document per row, in data/raw's order, shard for shard.
- data/grouped: one block per row. `input_ids` is a fixed-size list of block_size
  ids, cut from the split's documents concatenated in order (only the split's final
  remainder, fewer than block_size ids, is dropped); `document_starts` (list of
  uint16, uint32 past 65,536-token blocks) holds where documents start inside the
  block, ascending (0 when the block starts with a document).

Rules the loader relies on (and checks before it reads):
- Every record batch of a grouped folder holds the same number of blocks, the
  split's last batch excepted (the group stage writes 8 MB of ids per batch), so a
  block's record batch is one division away; a shard holds whole record batches.
- state.json's names are plain file names inside the folder, each listed once, and
  every shard of a folder has the same schema. A folder may come from elsewhere (a
  teammate's `dvc push`) and its hashes come from the same state.json as its names:
  a hash proves a shard whole, not where it lives (see `shards`).
- Each shard's sha256 is in state.json, so any process can check the one shard it
  reads, and a shard is the unit of parallel work. The row counts there catch a
  shard cut at a record-batch boundary without reading its data.

- data/tokenized and data/grouped hold `provenance.json` at their top:
  {"tokenizer": its name, "tokenizer_sha256": the sha256 of its tokenizer.json,
  "add_bos", "add_eos"}. Corpora mixed into one recipe must share the tokenizer.

Writing is causal_lm_data.pipeline.writer's; this module only reads.
"""

import functools
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from causal_lm_data.errors import UserError, first_line, printable, quoted


class FolderError(UserError):
    """A data folder that is missing, damaged, or not what the caller expected.

    `problem` says what is wrong and `stage` names the pipeline stage that writes
    the folder: the stage commands turn it into the dvc command that rebuilds it,
    while a training job sees `fix` (or which stage to run again), never a dvc command.
    """

    def __init__(self, problem: str, stage: str, fix: str | None = None, missing: bool = False):
        self.problem, self.stage, self.missing = problem, stage, missing
        # A missing folder is built, not repaired: `fix` (how to repair one) does not apply.
        remedy = f"run the '{stage}' stage first" if missing else fix or f"rebuild it with the '{stage}' stage"
        super().__init__(f"{problem}; {remedy}")


def plain_name(name) -> bool:
    """Whether `name` (read from a folder's own index) names a file or folder directly inside that folder."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def split_names(folder, stage: str, fix: str | None = None) -> list[str]:
    """The splits of a folder saved like a `datasets.DatasetDict`; [""] (the folder itself) otherwise.

    Stages hold out a validation split only when asked, so Lab1's default output
    stays a single dataset: `Path(folder) / ""` is the folder. dataset_dict.json
    arrives with the data, so it is checked: a list of plain names, each once, none
    a symlink (DVC links files, never folders). `stage` wrote the folder; `fix` says
    how to repair a bad one (by default: rebuild it with that stage).
    """
    index = Path(folder) / "dataset_dict.json"
    if not index.exists():
        return [""]
    try:
        splits = json.loads(index.read_text())
        splits = splits.get("splits") if isinstance(splits, dict) else None
        if not isinstance(splits, list) or not splits:
            raise ValueError('it must hold {"splits": [one name per split folder]}')
        for position, name in enumerate(splits):
            if not plain_name(name):
                raise ValueError(f"split {quoted(name)} is not a plain folder name")
            if name in splits[:position]:
                raise ValueError(f"split {quoted(name)} is listed twice")
            if Path(folder, name).is_symlink():
                raise ValueError(f"split {quoted(name)} is a symlink, not a folder inside {folder}")
    except (OSError, ValueError) as error:
        raise FolderError(f"{index} is malformed ({first_line(error)})", stage, fix) from None
    return splits


def split_folder(folder, split: str | None, stage: str, fix: str | None = None) -> Path:
    """The dataset folder of `split` ("train" by default) inside `folder`, written by `stage` (see split_names)."""
    names = split_names(folder, stage, fix)
    if names == [""]:
        if split not in (None, "train"):
            raise ValueError(f"{folder} has no '{split}' split; hold one out with download.validation_size")
        return Path(folder)
    split = split or "train"
    if split not in names:
        raise ValueError(f"{folder} has no '{split}' split; it has: {', '.join(names)}")
    return Path(folder) / split


PROVENANCE = "provenance.json"


def read_provenance(folder) -> dict:
    """What built a tokenized or grouped folder (its tokenizer; see the module's spec); {} if it records nothing."""
    path = Path(folder) / PROVENANCE
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is malformed ({first_line(error)}); rebuild the folder") from None
    return found if isinstance(found, dict) else {}


def shard_name(index: int, count: int) -> str:
    return f"data-{index:05d}-of-{count:05d}.arrow"


@dataclass(frozen=True)
class Shard:
    """One Arrow file of a dataset folder, and the sha256 state.json records for it."""

    path: Path
    sha256: str
    rows: int
    stage: str  # the stage that writes it, named in errors
    fix: str | None = None  # how an error says to repair the folder; None: rebuild it with `stage`

    def batches(self, verify: bool = True) -> pa.RecordBatchStreamReader:
        """Its record batches, streamed (each read into memory and freed after use).

        A memory map would keep every page it touched resident, so a stage's RSS
        would grow with the corpus. The file is checked against its hash first: a
        stream cut at a batch boundary still parses, so only the hash proves it whole.
        """
        if verify:
            self.verify()
        try:
            return pa.ipc.open_stream(pa.OSFile(str(self.path)))
        except (OSError, pa.ArrowException) as error:
            raise _corrupt(self.path.parent, self, error) from None

    def verify(self) -> None:
        try:
            if file_hash(self.path) != self.sha256:
                raise ValueError(f"{self.path.name} does not match the hash in state.json")
        except (OSError, ValueError) as error:
            raise _corrupt(self.path.parent, self, error) from None


def verify_shards(found: list[Shard]) -> None:
    """Check every shard against its hash, several at a time; the error names the first failing shard in order.

    hashlib releases the GIL while it hashes, so threads hash shards in parallel, one
    per processor this process may use (a grouped folder of 1 B tokens is about 36
    shards, 2.3 GB); at most 8, each holding one 16 MB read buffer (file_hash).
    """
    processors = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(len(found), processors, 8)
    if workers <= 1:
        for shard in found:
            shard.verify()
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(Shard.verify, found):  # results in order: the first failure is the first shard's
            pass


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def shards(folder, stage: str, fix: str | None = None) -> list[Shard]:
    """The shards of a dataset folder written by `stage`, in order (not yet hash-checked).

    What state.json lists is checked before anything is opened: each shard is a
    plain file name in the folder (no path, no `..`), listed once, a regular file,
    and not a symlink leading out of the folder, except into the DVC cache of the
    repository holding it (`dvc config cache.type symlink` links every file there).
    Hardlinks, DVC's default here, are the files themselves. `fix` says how to
    repair a bad folder; by default: rebuild it with that stage.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderError(f"{folder} does not exist", stage, fix, missing=True)
    if not (folder / "state.json").exists():
        raise UserError(f"{folder} is not a dataset folder (no state.json); give the '{stage}' stage's output")
    try:
        files = json.loads((folder / "state.json").read_text())["_data_files"]
        if not isinstance(files, list) or not files:
            raise ValueError("state.json lists no shards")
        found = [_listed_shard(folder, entry, stage, fix) for entry in files]
        twice = [name for name, count in Counter(shard.path.name for shard in found).items() if count > 1]
        if twice:
            raise ValueError(f"state.json lists {quoted(twice[0])} more than once")
        for shard in found:
            _check_inside(shard.path, folder)
        missing = [shard.path.name for shard in found if not shard.path.is_file()]
        if missing:
            raise ValueError(f"{', '.join(map(quoted, missing))} is missing or not a file")
        return found
    except (OSError, ValueError, LookupError, TypeError) as error:
        raise FolderError(f"{folder} is corrupt or truncated ({first_line(error)})", stage, fix) from None


def _listed_shard(folder: Path, entry, stage: str, fix: str | None) -> Shard:
    """The Shard one entry of state.json's `_data_files` describes, once its fields are checked."""
    if not isinstance(entry, dict) or not {"filename", "rows", "sha256"} <= entry.keys():
        raise ValueError(f"state.json lists {quoted(entry)} as a shard, not a {{filename, rows, sha256}} entry")
    name, sha256, rows = entry["filename"], entry["sha256"], entry["rows"]
    if not plain_name(name):
        raise ValueError(f"state.json lists {quoted(name)} as a shard, not a file name inside the folder")
    if not isinstance(sha256, str) or isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ValueError(f"state.json's entry for {quoted(name)} has no valid sha256 and row count")
    return Shard(folder / name, sha256, rows, stage, fix)


def _check_inside(path: Path, folder: Path) -> None:
    """Refuse a shard that is a symlink to a file outside `folder` and outside its repository's DVC cache."""
    if not path.is_symlink():
        return  # a plain name that is no symlink is a file of the folder itself
    target, home = path.resolve(), folder.resolve()
    if target.is_relative_to(home):
        return
    cache = _dvc_cache(home)
    if cache is None or not target.is_relative_to(cache):
        where = "its folder" if cache is None else "its folder and the repository's DVC cache"
        raise ValueError(f"{quoted(path.name)} is a symlink to {quoted(str(target))}, outside {where}")


@functools.cache
def _dvc_cache(folder: Path) -> Path | None:
    """The DVC cache folder of the repository holding `folder` (None: not in a DVC repository).

    Read from the repository's `.dvc/config` and `.dvc/config.local` (`[cache] dir`,
    relative to `.dvc/`), as DVC resolves it, without importing DVC: the read side
    loads none of the write side's packages.
    """
    import configparser

    root = next((parent for parent in (folder, *folder.parents) if (parent / ".dvc").is_dir()), None)
    if root is None:
        return None
    cache = root / ".dvc" / "cache"
    for name in ("config", "config.local"):
        config = configparser.ConfigParser()
        try:
            config.read(root / ".dvc" / name, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        if config.has_option("cache", "dir"):
            cache = root / ".dvc" / config.get("cache", "dir").strip().strip("'\"")
    return cache.resolve()


def _corrupt(folder: Path, shard: "Shard", error: Exception) -> "FolderError":
    return FolderError(f"{folder} is corrupt or truncated ({first_line(error)})", shard.stage, shard.fix)


def read_batches(folder, stage: str) -> Iterator[pa.RecordBatch]:
    """Stream every record batch of a dataset folder written by `stage`, each shard hash-checked first."""
    for shard in shards(folder, stage):
        yield from shard.batches()


def read_table(folder, stage: str) -> pa.Table:
    """A whole (small) dataset folder in memory: for tests and inspection, never for a stage's data."""
    return pa.Table.from_batches(list(read_batches(folder, stage)), schema=read_schema(folder, stage))


def read_schema(folder, stage: str, fix: str | None = None) -> pa.Schema:
    """The schema of a dataset folder, read from each shard's header (not its data).

    Every shard must hold the same columns and types: a uint32 shard read as the
    first shard's uint16 would wrap its ids.
    """
    schema = first = None
    for shard in shards(folder, stage, fix):
        try:
            with pa.OSFile(str(shard.path)) as source:
                found = pa.ipc.open_stream(source).schema
        except (OSError, pa.ArrowException) as error:
            raise _corrupt(shard.path.parent, shard, error) from None
        if schema is None:
            schema, first = found, shard.path.name
        elif not found.equals(schema):
            raise mixed_shards(Path(folder), (first, describe(schema)), (shard.path.name, describe(found)), shard)
    return schema


def describe(schema: pa.Schema) -> str:
    return printable(", ".join(f"{field.name}: {field.type}" for field in schema))


def mixed_shards(folder: Path, one: tuple[str, str], other: tuple[str, str], shard: "Shard") -> "FolderError":
    """The error for a folder whose shards hold different columns or types: (name, description) of two of them."""
    return FolderError(
        f"{folder} mixes shards of different kinds ({one[0]} holds {one[1]}; {other[0]} holds {other[1]})", shard.stage, shard.fix
    )


def count_list_values(shard: Shard, column: str) -> int:
    """How many values the list `column` of one shard holds, from its offsets alone.

    The file is memory-mapped and only each record batch's header and offsets are
    touched: counting the tokens of a 64 MB shard reads well under 1 MB of it.
    """
    try:
        with pa.memory_map(str(shard.path)) as source:
            chunks = pa.ipc.open_stream(source).read_all().column(column).chunks
            return sum(int(chunk.offsets[-1].as_py()) - int(chunk.offsets[0].as_py()) for chunk in chunks if len(chunk))
    except (OSError, pa.ArrowException, KeyError) as error:
        raise _corrupt(shard.path.parent, shard, error) from None


@dataclass(frozen=True)
class MappedBlocks:
    """The blocks of one shard written by the group stage, memory-mapped: nothing is read until a batch asks.

    Per record batch (8 MB of ids each, so ~2,500 of them at 10 B tokens) it keeps
    where the batch's rows, ids and document starts begin in the file; no table has
    one entry per block, so mapping a shard costs the same for any shard size.
    Row r of record batch b: ids[id_starts[b] + r * block_size:][:block_size]; its
    document starts: starts[value_starts[b] + offsets[offset_starts[b] + r]:][:count],
    with count = offsets[offset_starts[b] + r + 1] - offsets[offset_starts[b] + r].
    """

    ids: np.ndarray  # the whole file viewed as the id type: zero-copy
    block_size: int
    first_rows: np.ndarray  # per record batch: its first row, then the shard's row count
    id_starts: np.ndarray  # per record batch: where its ids begin in `ids`
    offsets: np.ndarray | None  # the whole file viewed as int32: document_starts' list offsets
    offset_starts: np.ndarray | None  # per record batch: where its list offsets begin in `offsets`
    starts: np.ndarray | None  # the whole file viewed as the position type: document_starts' values
    value_starts: np.ndarray | None  # per record batch: where its document starts begin in `starts`

    def __len__(self) -> int:
        return int(self.first_rows[-1])


def map_blocks(shard: Shard) -> MappedBlocks:
    """Memory-map one shard of blocks, checking its structure and row count (not its hash: `Shard.verify`).

    A corrupt or truncated shard is reported naming the stage that rebuilds it, and
    a folder of another kind (data/raw, data/tokenized) naming what was expected.
    """
    try:
        source = pa.memory_map(str(shard.path))
        reader = pa.ipc.open_stream(source)
        schema = reader.schema
        column = schema.get_field_index("input_ids")
        if column < 0 or not pa.types.is_fixed_size_list(schema.field(column).type):
            found = ", ".join(f"{f.name}: {f.type}" for f in schema)
            raise UserError(
                f"{shard.path.parent} holds {found}, not the fixed-length 'input_ids' blocks the "
                f"'{shard.stage}' stage writes; give its output folder (data/grouped)"
            )
        batches = list(reader)  # zero-copy: record batch headers are parsed, their data is not read
        source.seek(0)
        whole = source.read_buffer()  # the whole map, without copying
    except (OSError, pa.ArrowException) as error:
        raise _corrupt(shard.path.parent, shard, error) from None
    rows = sum(batch.num_rows for batch in batches)
    if rows != shard.rows:
        raise _corrupt(shard.path.parent, shard, ValueError(f"{shard.path.name} has {rows} rows, state.json says {shard.rows}"))
    id_type = schema.field(column).type
    block_size, dtype = id_type.list_size, np.dtype(str(id_type.value_type))

    def view(dtype) -> np.ndarray:
        return np.frombuffer(whole, dtype=dtype, count=whole.size // dtype.itemsize)

    def start_of(buffer, dtype, offset=0) -> int:
        # Arrow aligns every buffer to 8 bytes, so this division is exact.
        return (buffer.address - whole.address) // dtype.itemsize + offset

    first_rows = np.cumsum([0] + [batch.num_rows for batch in batches])
    id_starts, offset_starts, value_starts = [], [], []
    has_starts = "document_starts" in schema.names
    int32 = np.dtype(np.int32)
    starts_type = np.dtype(str(schema.field("document_starts").type.value_type)) if has_starts else None
    for batch in batches:
        # The list array's child holds every batch's ids; `values` and offsets, not flatten(), which
        # imports pyarrow.compute, a large module the loader needs nothing of.
        lists = batch.column(column)
        ids = lists.values
        id_starts.append(start_of(ids.buffers()[1], dtype, ids.offset + lists.offset * block_size) if len(lists) else 0)
        if has_starts:
            lists = batch.column("document_starts")
            offset_starts.append(start_of(lists.buffers()[1], int32, lists.offset) if len(lists) else 0)
            values = lists.buffers()[3]
            value_starts.append(start_of(values, starts_type) if values is not None and values.size else 0)
    mapped = {"offsets": None, "offset_starts": None, "starts": None, "value_starts": None}
    if has_starts:
        mapped = {
            "offsets": view(int32),
            "offset_starts": np.array(offset_starts, dtype=np.int64),
            "starts": view(starts_type),
            "value_starts": np.array(value_starts, dtype=np.int64),
        }
    return MappedBlocks(view(dtype), block_size, first_rows, np.array(id_starts, dtype=np.int64), **mapped)


def as_numpy(values: pa.Array) -> np.ndarray:
    """A zero-copy numpy view of a primitive Arrow array without nulls.

    pyarrow's own `to_numpy` imports pandas, which costs a stage 0.4 s of startup.
    The view is read-only and lives as long as the memory map it points into.
    """
    if values.null_count:
        raise ValueError("token ids cannot be null")
    dtype = np.dtype(str(values.type))
    return np.frombuffer(values.buffers()[1], dtype=dtype, count=len(values), offset=values.offset * dtype.itemsize)
