"""`causal-lm-data show`: a few rows of a data folder decoded back to text, document boundaries marked.

A row is a block of data/grouped, a document of data/tokenized, or a document of
data/raw. Everything printed from the data is escaped (causal_lm_data.errors.printable),
so no document can move the cursor, retitle the terminal or reorder the line; a
newline inside a document is shown as a line break, and every line of a document
starts with the gutter TEXT, so a document can never print a line that looks like
one of ours: the lines this command writes (headers, markers, ids, tokens) start
at column 0 with MARK, and MARK itself is escaped inside documents too.

The rows are read through memory maps: printing three blocks of a 64 MB shard
reads a few pages of it. transformers is imported only when ids must be decoded.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from causal_lm_data.errors import UserError, first_line, printable
from causal_lm_data.format import Shard, as_numpy, shards, split_folder

MARK = "\u27e6"  # ⟦ starts every line this command writes about the data (headers, boundaries)
MARK_END = "\u27e7"  # ⟧
TEXT = "\u2502 "  # │ starts every line of a document's text
# The stage that writes each folder of this repository's pipeline, named in errors.
STAGES = {"raw": "download", "clean": "clean", "tokenized": "tokenize", "grouped": "group"}


@dataclass(frozen=True)
class Row:
    """One row of a data folder: its ids (blocks, tokenized documents) or its text (raw documents)."""

    index: int
    ids: np.ndarray | None
    text: str | None
    document_starts: np.ndarray | None  # blocks only: where documents start inside the block; None if not recorded


class Folder:
    """The shards of one split of a dataset folder, memory-mapped, with rows addressed across shards."""

    def __init__(self, folder, split: str | None):
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"{folder} is not a folder; give a data folder such as data/grouped, data/tokenized or data/raw")
        self.stage = STAGES.get(folder.name, "group")
        try:
            self.path = split_folder(folder, split, self.stage)
        except ValueError as error:
            raise UserError(str(error)) from None
        self.shards: list[Shard] = shards(self.path, self.stage)
        self.first_rows = np.cumsum([0] + [shard.rows for shard in self.shards])
        self.schema = self._table(0).schema
        self.kind = self._kind()

    def _kind(self) -> str:
        fields = {field.name: field.type for field in self.schema}
        ids = fields.get("input_ids")
        if ids is not None and pa.types.is_fixed_size_list(ids):
            return "blocks"
        if ids is not None and pa.types.is_list(ids):
            return "documents"
        if "text" in fields and pa.types.is_string(fields["text"]):
            return "text"
        described = ", ".join(f"{name}: {kind}" for name, kind in fields.items())
        raise UserError(
            f"{self.path} holds {described}: neither blocks (data/grouped), token ids (data/tokenized) nor text (data/raw)"
        )

    def __len__(self) -> int:
        return int(self.first_rows[-1])

    def _table(self, shard_index: int) -> pa.Table:
        shard = self.shards[shard_index]
        try:  # zero-copy: record batch headers are parsed, their data is read only where sliced
            table = pa.ipc.open_stream(pa.memory_map(str(shard.path))).read_all()
        except (OSError, pa.ArrowException) as error:
            raise UserError(
                f"{self.path} is corrupt or truncated ({first_line(error)}); rebuild it: dvc repro --force {self.stage}"
            ) from None
        if table.num_rows != shard.rows:
            raise UserError(
                f"{self.path} is corrupt or truncated ({shard.path.name} has {table.num_rows} rows, state.json says "
                f"{shard.rows}); rebuild it: dvc repro --force {self.stage}"
            )
        return table

    def check_index(self, index: int) -> None:
        if not 0 <= index < len(self):
            unit = "block" if self.kind == "blocks" else "document"
            raise UserError(f"{unit} {index} is out of range: {self.path} has {len(self):,} (0 to {len(self) - 1:,})")

    def row(self, index: int) -> Row:
        self.check_index(index)
        shard_index = int(np.searchsorted(self.first_rows, index, side="right")) - 1
        record = self._table(shard_index).slice(index - int(self.first_rows[shard_index]), 1)
        if self.kind == "text":
            return Row(index, None, record.column("text")[0].as_py(), None)
        ids = as_numpy(record.column("input_ids")[0].values).astype(np.int64)
        starts = None
        if "document_starts" in record.column_names:
            starts = as_numpy(record.column("document_starts")[0].values).astype(np.int64)
        return Row(index, ids, None, starts)


def choose_rows(count: int, first: int | None, blocks: list[int] | None, random: int | None, seed: int) -> list[int]:
    """The rows to show: the first `first`, the rows `blocks`, or `random` rows drawn with `seed` (in order)."""
    if blocks:
        return [block + count if block < 0 else block for block in blocks]  # -1: the last row
    if random is not None:
        if seed < 0:  # numpy's generators take none
            raise UserError(f"seed {seed} is negative: give --seed a whole number >= 0")
        drawn = np.random.default_rng(seed).choice(count, size=min(random, count), replace=False)
        return sorted(int(row) for row in drawn)
    return list(range(min(first, count)))


def escaped_text(text: str) -> str:
    """A document's text as gutter lines: control characters and MARK escaped, newlines kept as line breaks."""
    lines = text.split("\n")
    return "\n".join(TEXT + printable(line).replace(MARK, "\\u27e6") for line in lines)


def mark(words: str) -> str:
    return f"{MARK}{words}{MARK_END}"


class Decoder:
    """Token ids to text and token strings, with the tokenizer loaded (transformers imported) on first use."""

    def __init__(self, name: str, revision: str = "main"):
        self.name, self.revision, self._tokenizer = name, revision, None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from causal_lm_data.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.name, self.revision)
        return self._tokenizer

    def check(self, ids: np.ndarray) -> None:
        """Refuse ids the tokenizer does not have: the data was built with another tokenizer."""
        if len(ids) and int(ids.max()) >= len(self.tokenizer):
            raise UserError(
                f"token id {int(ids.max()):,} is beyond tokenizer {printable(self.name)}'s {len(self.tokenizer):,} tokens: "
                "the data was built with another tokenizer; give it with --tokenizer"
            )

    def text(self, ids: np.ndarray) -> str:
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def tokens(self, ids: np.ndarray) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(ids.tolist())


def segments(row: Row, eos_token_id: int | None) -> list[tuple[int, int, str]]:
    """A row's ids cut where documents start: (first, end, the marker line before them) per piece.

    A document glued to the one before it (tokenize.add_eos false) says so: the
    model sees the two as one text.
    """
    size = len(row.ids)
    if row.document_starts is None:  # a tokenized document, or blocks written before starts were recorded
        return [(0, size, "")]
    starts = sorted(set(row.document_starts.tolist()))
    pieces = []
    if not starts or starts[0] > 0:
        end = starts[0] if starts else size
        pieces.append((0, end, mark("continues a document begun in an earlier block")))
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else size
        glued = start > 0 and eos_token_id is not None and int(row.ids[start - 1]) != eos_token_id
        pieces.append(
            (start, end, mark(f"document starts at token {start}" + (" (no end-of-text token before it)" if glued else "")))
        )
    return pieces


def describe(folder: Folder, row: Row) -> str:
    """The header line of a row: what it is, where it sits, how long it is."""
    where = printable(str(folder.path))
    if folder.kind == "text":
        return mark(f"document {row.index:,} of {len(folder):,} in {where}: {len(row.text):,} characters")
    if folder.kind == "documents":
        return mark(f"document {row.index:,} of {len(folder):,} in {where}: {len(row.ids):,} tokens")
    if row.document_starts is None:
        starts = "no document starts recorded (rebuild with: dvc repro --force group)"
    else:
        count = len(set(row.document_starts.tolist()))
        starts = f"{count} document{'s' if count != 1 else ''} start{'s' if count == 1 else ''} in it"
    return mark(f"block {row.index:,} of {len(folder):,} in {where}: {len(row.ids):,} tokens, {starts}")


def render(folder: Folder, row: Row, decoder: Decoder | None, ids: bool, tokens: bool) -> str:
    """The lines showing one row: header, then per document piece a marker, its text, its ids and tokens if asked."""
    lines = [describe(folder, row)]
    if row.text is not None:
        return "\n".join([*lines, escaped_text(row.text)])
    decoder.check(row.ids)
    for first, end, marker in segments(row, decoder.tokenizer.eos_token_id):
        piece = row.ids[first:end]
        if marker:
            lines.append(marker)
        lines.append(escaped_text(decoder.text(piece)))
        if ids:
            lines.append("ids: " + " ".join(map(str, piece.tolist())))
        if tokens:
            lines.append(
                "tokens: " + printable(" ".join(json.dumps(token, ensure_ascii=False) for token in decoder.tokens(piece)))
            )
    return "\n".join(lines)


def default_tokenizer(folder: Path) -> tuple[str, str]:
    """The tokenizer params.yaml names (`tokenize` section): of the repository holding `folder`, else the current folder's."""
    from causal_lm_data.pipeline.params import PARAMS_FILE, load_params

    repository = next((parent for parent in Path(folder).resolve().parents if (parent / PARAMS_FILE).is_file()), None)
    params_file = repository / PARAMS_FILE if repository else PARAMS_FILE
    if not Path(params_file).is_file():
        raise UserError(f"no {PARAMS_FILE} above {folder} or here to say which tokenizer built it; give one with --tokenizer")
    params = load_params("tokenize", params_file)
    if params["tokenizer"] == "local":
        return str(Path(params_file).parent / params["local_path"]), "main"
    return params["tokenizer"], params["revision"]


def show(folder, split=None, first=3, blocks=None, random=None, seed=0, tokenizer=None, ids=False, tokens=False) -> Iterator[str]:
    """The chosen rows of `folder` (one split of it) as text, one string per row; the layout is the module docstring's."""
    data = Folder(folder, split)
    if data.kind == "text" and (ids or tokens):
        raise UserError(f"{data.path} holds text, not token ids: --ids and --tokens need data/tokenized or data/grouped")
    decoder = None
    if data.kind != "text":
        decoder = Decoder(tokenizer) if tokenizer else Decoder(*default_tokenizer(folder))
    if not len(data):
        raise UserError(f"{data.path} holds no {'blocks' if data.kind == 'blocks' else 'documents'}: nothing to show")
    for block in blocks or []:  # as given, before -1 becomes the last: -12 of 10 rows is not row -2
        if not -len(data) <= block < len(data):
            unit = "block" if data.kind == "blocks" else "document"
            raise UserError(
                f"{unit} {block} is out of range: {data.path} has {len(data):,} (0 to {len(data) - 1:,}); -1 is the last, -{len(data):,} the first"
            )
    rows = choose_rows(len(data), first, blocks, random, seed)
    for index in rows:
        data.check_index(index)  # an index out of range fails before anything is printed
    return (render(data, data.row(index), decoder, ids, tokens) for index in rows)
