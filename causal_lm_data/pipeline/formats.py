"""Readers of the file formats corpora ship in: JSON lines, JSON arrays and text, plain or compressed.

Each file is streamed (never extracted to disk) and yields Arrow tables of at most
BATCH_DOCUMENTS documents, so memory stays flat whatever the file's size.

- Compression: gzip, zstd, bz2 or xz, told by the file's ending (`.gz`, `.zst`,
  `.zstd`, `.bz2`, `.xz`) and checked against its magic number; a file with a plain
  ending whose first bytes are a compressed stream's is read decompressed too. A
  file is read whole or refused: one cut short (a zstd frame that does not end, a
  gzip member without its trailer) or with bytes after its last frame stops the run
  naming it. zstd files may hold many frames and skippable frames (pzstd writes one
  before each frame); both are read.
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
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from causal_lm_data.errors import UserError

try:  # the reader BZ2File and LZMAFile share: moved in Python 3.14
    from compression._common._streams import DecompressReader
except ImportError:
    from _compression import DecompressReader

BATCH_DOCUMENTS = 10_000
COMPRESSION_ENDINGS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
JSON_ENDINGS = {".json", ".jsonl", ".ndjson"}
# What a compressed file holds, when its size is not recorded in it: typical English
# text compresses about 4:1. Only where tasks are cut depends on it, never what is read.
COMPRESSION_RATIO = 4
_BOM = codecs.BOM_UTF8
_JSON_WHITESPACE = " \t\r\n"
_READ_BYTES = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# zstd compresses a block of 128 KiB to as little as 4 bytes: feeding the decompressor
# this much at a time bounds what one call returns (highly repetitive text included).
_ZSTD_FEED_BYTES = 1 << 14


def _is_skippable_frame(head: bytes) -> bool:
    """A zstd skippable frame starts here: magic 0x184D2A50 to 0x184D2A5F (little-endian), as pzstd writes."""
    return len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"


def compression_of(path: Path) -> str | None:
    """gzip, zstd, bz2, xz or None (plain), from the file's first bytes; refused if its ending says otherwise."""
    with open(path, "rb") as file:
        head = file.read(10)
    if head[:2] == b"\x1f\x8b":
        found = "gzip"
    elif head[:4] == _ZSTD_MAGIC or _is_skippable_frame(head):
        found = "zstd"
    elif head[:6] == b"\xfd7zXZ\x00":
        found = "xz"
    elif head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        found = "bz2"  # the full 10-byte signature: "BZh9" alone could start a text file
    else:
        found = None
    named = COMPRESSION_ENDINGS.get(path.suffix.lower())
    if named and not head:
        raise UserError(f"{path} is empty: it holds no {named} data; remove it or recompress it")
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
    if compression in ("bz2", "xz"):
        decompressor = bz2.BZ2Decompressor if compression == "bz2" else lzma.LZMADecompressor
        return io.BufferedReader(_WholeStreams(open(path, "rb"), decompressor), _READ_BYTES)
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise UserError(f"reading {path} needs the `zstandard` package: pip install -r requirements.txt") from None
        return io.BufferedReader(_ZstdFrames(path, zstandard), _READ_BYTES)
    return open(path, "rb", buffering=_READ_BYTES)


class _WholeStreams(DecompressReader):
    """Every stream of a bz2 or xz file, as BZ2File and LZMAFile read them, but bytes after the last are refused.

    Those stop silently where the bytes after a stream start no stream (their
    `trailing_error`); with none, the decompressor's own error stops the run. A
    stream cut short raises EOFError, as there.
    """

    def __init__(self, file: BinaryIO, decompressor):
        super().__init__(file, decompressor, trailing_error=())

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._fp.close()


class _ZstdFrames(io.RawIOBase):
    """Every frame of a zstd file, decompressed in order; UserError if the last one is cut short.

    libzstd's streaming reader stops silently where a cut file ends, so each frame is
    decompressed on its own and must reach its end: `zstd` and pzstd write several
    frames into one file, and skippable frames (which libzstd passes over, yielding
    nothing) before or between them. Bytes after the last frame that start no frame
    are refused by libzstd as an unknown frame descriptor.
    """

    def __init__(self, path: Path, zstandard):
        self._path = path
        self._file = open(path, "rb")
        self._new_frame = zstandard.ZstdDecompressor().decompressobj
        self._error = zstandard.ZstdError
        self._frames = 0  # frames read whole (skippable ones too)
        self._frame = None  # the frame being decompressed; None between frames
        self._left = b""  # compressed bytes read past the end of the last frame
        self._output = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._output:
            compressed = self._left or self._file.read(_ZSTD_FEED_BYTES)
            self._left = b""
            if not compressed:
                if self._frame is not None:
                    raise UserError(
                        f"cannot read {self._path}: corrupt or truncated compressed data (its last zstd frame is cut "
                        "short); download or recompress it whole"
                    )
                return 0
            starts_frame = self._frame is None
            if starts_frame:
                self._frame = self._new_frame()
            try:
                self._output = memoryview(self._frame.decompress(compressed))
            except self._error:
                if starts_frame and self._frames:  # the start of the file was checked: zstd or skippable magic
                    raise UserError(
                        f"cannot read {self._path}: corrupt compressed data after its zstd frame {self._frames:,} (from "
                        f"byte {self._file.tell() - len(compressed):,}, no frame starts); remove it or recompress the file"
                    ) from None
                raise
            if self._frame.eof:  # the frame ended: what follows it starts the next one
                self._left, self._frame = self._frame.unused_data, None
                self._frames += 1
        count = min(len(buffer), len(self._output))
        buffer[:count] = self._output[:count]
        self._output = self._output[count:]
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


def estimated_bytes(path: Path) -> int:
    """About how many bytes the file holds once decompressed: the size the format records, else an estimate."""
    size = path.stat().st_size
    compression = compression_of(path)
    if compression is None:
        return size
    with open(path, "rb") as file:
        if compression == "gzip" and size >= _GZIP_SMALLEST:  # a smaller one is cut short: the reader refuses it
            file.seek(-4, io.SEEK_END)  # ISIZE: the last member's size modulo 4 GiB
            return max(int.from_bytes(file.read(4), "little"), size)
        if compression == "zstd":
            recorded = _zstd_content_size(file)
            if recorded > 0:
                return max(recorded, size)
    return size * COMPRESSION_RATIO


_GZIP_SMALLEST = 18  # a 10-byte header and an 8-byte trailer (CRC32, ISIZE)


def _zstd_content_size(file: BinaryIO) -> int:
    """The size the first data frame records, past any skippable frames; -1 if none is recorded or readable."""
    try:
        import zstandard
    except ImportError:  # the reader says what to install
        return -1
    for _ in range(16):  # pzstd writes one skippable frame before each frame; more is no format we know
        head = file.read(18)  # the longest frame header
        if not _is_skippable_frame(head):
            try:
                return zstandard.frame_content_size(head)
            except zstandard.ZstdError:  # a header cut short: the reader refuses the file
                return -1
        if len(head) < 8:
            return -1
        file.seek(file.tell() - len(head) + 8 + int.from_bytes(head[4:8], "little"))
    return -1


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


def _blocks_of_whole_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's bytes in blocks that end where a line does (the last block where the stream does), without that \\n.

    Only the bytes just read are searched for a line end, and the pieces of a line
    longer than a read are joined once it ends: linear in the line's length, where
    rescanning what is held on every read would be quadratic.
    """
    pieces = []  # the start of a line that no read so far has ended
    while True:
        chunk = stream.read(_READ_BYTES)
        if not chunk:
            last = b"".join(pieces)
            if last:  # a last line without its \n
                yield last
            return
        cut = chunk.rfind(b"\n")
        if cut < 0:
            pieces.append(chunk)
            continue
        pieces.append(chunk[:cut])
        yield b"".join(pieces)
        pieces = [chunk[cut + 1 :]]


def _lines(stream: BinaryIO, path: Path) -> Iterator[str]:
    """The lines of a stream without their \\n, decoded as strict UTF-8 a block of whole lines at a time."""
    number = 0
    for block in _blocks_of_whole_lines(stream):
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
        except RecursionError:
            raise _too_deep(path, f"line {number:,}") from None
        except ValueError as error:
            if not text.strip(_JSON_WHITESPACE):
                continue  # a blank line holds no record
            reason = getattr(error, "msg", str(error))
            raise UserError(f"{path} line {number:,} is not a JSON record ({reason}); one record per line") from None
        yield number, record


def _too_deep(path: Path, where: str) -> UserError:
    # Python's json parses nested arrays and objects by recursion, as deep as the interpreter's limit.
    return UserError(
        f"{path} {where} nests arrays or objects too deeply for Python's JSON parser (more than about "
        f"{sys.getrecursionlimit():,} levels); flatten or drop the record"
    )


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
        except RecursionError:
            raise _too_deep(path, f"record {number:,} of its array") from None
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
