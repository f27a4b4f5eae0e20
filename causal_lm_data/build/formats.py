"""Readers of the file formats corpora ship in: JSON lines, JSON arrays and text, plain or compressed.

Each file is streamed (never extracted to disk) and yields Arrow tables of at most
BATCH_DOCUMENTS documents, so memory stays flat whatever the file's size.

- Compression: gzip, zstd, bz2 or xz, told by the file's ending (`.gz`, `.zst`,
  `.zstd`, `.bz2`, `.xz`) and checked against its magic number; a file with a plain
  ending whose first bytes are a compressed stream's is read decompressed too.
- JSON (`.jsonl`, `.ndjson`, `.json`): one record per line, parsed by Python's own
  `json` from strictly decoded UTF-8 (a byte-order mark at the start of the file is
  not text, as `utf-8-sig` reads it); a `.json` file whose first character is `[`
  is one array of records, parsed record by record. The text is the record's field
  `text_column`, or a nested one (`content.body`) when no field has that exact name.
  A record whose text is missing, null or not a string stops the run naming the file
  and line.
- Text (`.txt`): one document per line, lines split as Python's universal newlines
  (`\\n`, `\\r\\n`, `\\r`), exactly as the `datasets` text builder reads them.
"""

import bz2
import codecs
import gzip
import io
import json
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from causal_lm_data.errors import UserError

BATCH_DOCUMENTS = 10_000
COMPRESSION_ENDINGS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
JSON_ENDINGS = {".json", ".jsonl", ".ndjson"}
# What a compressed file holds, when its size is not recorded in it: typical English
# text compresses about 4:1. Only where tasks are cut depends on it, never what is read.
COMPRESSION_RATIO = 4
_BOM = codecs.BOM_UTF8
_JSON_WHITESPACE = " \t\r\n"
_READ_BYTES = 1 << 20


def compression_of(path: Path) -> str | None:
    """gzip, zstd, bz2, xz or None (plain), from the file's first bytes; refused if its ending says otherwise."""
    with open(path, "rb") as file:
        head = file.read(10)
    if head[:2] == b"\x1f\x8b":
        found = "gzip"
    elif head[:4] == b"\x28\xb5\x2f\xfd":
        found = "zstd"
    elif head[:6] == b"\xfd7zXZ\x00":
        found = "xz"
    elif head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        found = "bz2"  # the full 10-byte signature: "BZh9" alone could start a text file
    else:
        found = None
    named = COMPRESSION_ENDINGS.get(path.suffix.lower())
    if named and named != found:
        raise UserError(f"{path} ends in {path.suffix} but is not {named} data; rename or recompress it")
    return found


def format_of(path: Path) -> str:
    """The file's data ending in lower case, without a compression ending: `.jsonl` for `a.JSONL.gz`."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_ENDINGS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed as they are read."""
    compression = compression_of(path)
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bz2":
        return bz2.open(path, "rb")
    if compression == "xz":
        return lzma.open(path, "rb")
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise UserError(f"reading {path} needs the `zstandard` package: pip install -r requirements.txt") from None
        raw = open(path, "rb")
        # Every frame: `zstd` and pzstd may write several into one file.
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        return io.BufferedReader(reader, _READ_BYTES)
    return open(path, "rb", buffering=_READ_BYTES)


def estimated_bytes(path: Path) -> int:
    """About how many bytes the file holds once decompressed: the size the format records, else an estimate."""
    size = path.stat().st_size
    compression = compression_of(path)
    if compression is None:
        return size
    with open(path, "rb") as file:
        if compression == "gzip":
            file.seek(-4, io.SEEK_END)  # ISIZE: the last member's size modulo 4 GiB
            return max(int.from_bytes(file.read(4), "little"), size)
        if compression == "zstd":
            try:
                import zstandard
            except ImportError:  # the reader says what to install
                return size * COMPRESSION_RATIO
            recorded = zstandard.frame_content_size(file.read(18))
            if recorded > 0:
                return max(recorded, size)
    return size * COMPRESSION_RATIO


def _reading_failure(path: Path, error: Exception) -> UserError | None:
    """A one-line UserError when `error` says the compressed data is corrupt or cut short, else None."""
    corrupt = (EOFError, lzma.LZMAError, zlib.error)
    try:
        import zstandard

        corrupt += (zstandard.ZstdError,)
    except ImportError:
        pass
    # gzip and bz2 raise OSErrors without an errno for bad data; one with an errno is the disk's.
    if isinstance(error, corrupt) or (isinstance(error, OSError) and error.errno is None):
        return UserError(f"cannot read {path}: corrupt or truncated compressed data ({type(error).__name__}: {error})")
    return None


def _table(
    column: str, texts: list[str], numbers: list[int], path: Path, unit: str, source_field: str | None = None, sources=()
) -> pa.Table:
    try:
        table = pa.table({column: pa.array(texts, pa.string())})
        return table.append_column(source_field, pa.array(sources, pa.string())) if source_field else table
    except UnicodeEncodeError:  # a lone surrogate escape ("\ud800") is no UTF-8 text
        for text, number in zip(texts, numbers):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(
                    f"{path} {unit} {number:,}: its text holds a lone surrogate (\\ud800-\\udfff), which is not "
                    "UTF-8 text; fix the record"
                ) from None
        raise


def _field(record, dotted: str, keys: list[str]):
    """The value at `dotted` in a JSON record: the field of that exact name, else the nested path; `_MISSING` if none."""
    if isinstance(record, dict) and dotted in record:
        return record[dotted]
    value = record
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


_MISSING = object()
_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number"}


def _text(record, dotted: str, keys: list[str], path: Path, where: str) -> str:
    value = _field(record, dotted, keys)
    if isinstance(value, str):
        return value
    if value is _MISSING:
        fields = ", ".join(list(record)[:10]) if isinstance(record, dict) else "none: it is not an object"
        raise UserError(f"{path} {where} has no field '{dotted}' (its fields: {fields}); set download.text_column")
    if value is None:
        raise UserError(f"{path} {where}: '{dotted}' is null, not text; fill or drop the record")
    raise UserError(
        f"{path} {where}: '{dotted}' holds {_JSON_TYPES.get(type(value), 'a value')}, not text; set download.text_column"
    )


def json_batches(path: Path, text_column: str, source_field: str | None = None) -> Iterator[pa.Table]:
    """The texts of a JSON lines file (or a `.json` array of records) as tables of one column, `text_column`.

    With `source_field` (a dotted field such as `meta.pile_set_name`), a second column
    of that name holds each record's value of it, as text (null where it has none).
    """
    keys = text_column.split(".")
    source_keys = source_field.split(".") if source_field else None
    try:
        with open_binary(path) as stream:
            head = stream.peek(_READ_BYTES)  # what is buffered: enough to see past leading whitespace
            head = head[len(_BOM) :] if head.startswith(_BOM) else head
            array = head.lstrip(b" \t\r\n").startswith(b"[")
            records, unit = (_array_records(stream, path), "record") if array else (_line_records(stream, path), "line")
            texts, numbers, sources = [], [], []
            for number, record in records:
                # The common case, a top-level string field, costs one lookup; _text decides every other.
                value = record.get(text_column) if record.__class__ is dict else None
                if value.__class__ is not str:
                    value = _text(record, text_column, keys, path, f"{unit} {number:,}")
                texts.append(value)
                numbers.append(number)
                if source_keys:
                    source = _field(record, source_field, source_keys)
                    sources.append(None if source is None or source is _MISSING else str(source))
                if len(texts) == BATCH_DOCUMENTS:
                    yield _table(text_column, texts, numbers, path, unit, source_field, sources)
                    texts, numbers, sources = [], [], []
            if texts:
                yield _table(text_column, texts, numbers, path, unit, source_field, sources)
    except UserError:
        raise
    except Exception as error:
        raise _reading_failure(path, error) or error from None


def _lines(stream: BinaryIO, path: Path) -> Iterator[str]:
    """The lines of a stream without their \\n, decoded as strict UTF-8 a block of whole lines at a time."""
    tail, number = b"", 0
    while True:
        chunk = stream.read(_READ_BYTES)
        data = tail + chunk
        if not data:
            return
        cut = data.rfind(b"\n") if chunk else len(data)
        if cut < 0:  # no line ends in this chunk yet
            tail = data
            continue
        block, tail = data[:cut], data[cut + 1 :]
        if number == 0 and block.startswith(_BOM):
            block = block[len(_BOM) :]
        try:
            lines = block.decode("utf-8").split("\n")
        except UnicodeDecodeError:  # name the line: decode them one by one
            for offset, line in enumerate(block.split(b"\n"), number + 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise UserError(
                        f"{path} line {offset:,} is not valid UTF-8 (byte {error.start}); re-encode the corpus as UTF-8"
                    ) from None
            raise
        number += len(lines)
        yield from lines


def _line_records(stream: BinaryIO, path: Path) -> Iterator[tuple[int, object]]:
    loads = json.loads
    for number, text in enumerate(_lines(stream, path), 1):
        try:
            record = loads(text)
        except ValueError as error:
            if not text.strip(_JSON_WHITESPACE):
                continue  # a blank line holds no record
            reason = getattr(error, "msg", str(error))
            raise UserError(f"{path} line {number:,} is not a JSON record ({reason}); one record per line") from None
        yield number, record


def _array_records(stream: BinaryIO, path: Path) -> Iterator[tuple[int, object]]:
    """The elements of one JSON array, decoded one at a time from a growing window of the file."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8-sig")("strict")
    state = {"buffer": "", "position": 0, "end": False, "read": _READ_BYTES, "offset": 0}

    def fill() -> None:
        chunk = stream.read(state["read"])
        state["end"] = not chunk
        try:
            decoded = utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            raise UserError(
                f"{path} byte {state['offset'] + error.start:,} is not valid UTF-8; re-encode the corpus as UTF-8"
            ) from None
        state["offset"] += len(chunk)
        state["buffer"] = state["buffer"][state["position"] :] + decoded
        state["position"] = 0

    def next_character() -> str:
        while True:
            buffer, position = state["buffer"], state["position"]
            while position < len(buffer) and buffer[position] in _JSON_WHITESPACE:
                position += 1
            state["position"] = position
            if position < len(buffer) or state["end"]:
                return buffer[position : position + 1]
            fill()

    if next_character() != "[":
        raise UserError(f"{path} is not a JSON array of records")
    state["position"] += 1
    number = 0
    if next_character() == "]":
        return
    while True:
        number += 1
        next_character()
        try:
            record, end = decoder.raw_decode(state["buffer"], state["position"])
        except json.JSONDecodeError as error:
            if state["end"]:
                raise UserError(f"{path} record {number:,} of its array is not JSON ({error.msg})") from None
            state["read"] = max(_READ_BYTES, 2 * len(state["buffer"]))  # a record longer than the window: widen it
            fill()
            number -= 1
            continue
        state["position"] = end
        state["read"] = _READ_BYTES
        yield number, record
        separator = next_character()
        state["position"] += 1
        if separator == "]":
            if next_character():
                raise UserError(f"{path} has data after its JSON array")
            return
        if separator != ",":
            raise UserError(f"{path} record {number:,} of its array is followed by {separator!r}, not ',' or ']'")


def text_batches(path: Path) -> Iterator[pa.Table]:
    """The lines of a text file as tables of one column, `text`: one line, one document."""
    try:
        with open_binary(path) as binary:
            stream = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="strict", newline=None)
            batch = []
            for line in stream:
                batch.append(line[:-1] if line.endswith("\n") else line)
                if len(batch) == BATCH_DOCUMENTS:
                    yield pa.table({"text": pa.array(batch, pa.string())})
                    batch = []
            if batch:
                yield pa.table({"text": pa.array(batch, pa.string())})
    except UnicodeDecodeError:
        raise UserError(f"{path} line {_first_bad_line(path):,} is not valid UTF-8; re-encode the corpus as UTF-8") from None
    except UserError:
        raise
    except Exception as error:
        raise _reading_failure(path, error) or error from None


def _first_bad_line(path: Path) -> int:
    with open_binary(path) as stream:
        for number, line in enumerate(stream, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0
