"""The clean stage's work: which documents of a raw folder are kept, and why each other one is dropped.

Every decision is a pure function of the documents and the params, never of the
worker count or of arrival order. A document is named by its position in the raw
folder (split, shard, row); the splits are taken validation first, then train, and
within a cluster of duplicates the first document in that order is kept. So a
training copy of a validation document goes and the validation document stays,
and of two copies the earlier in source order stays (adding unrelated documents
changes no choice).

Steps, each dropping only documents no earlier step dropped, each a reason in the metrics:
1. `too_short` / `too_long`: fewer than clean.min_words / more than clean.max_words words.
2. `contaminated` (training split only): shares a clean.decontaminate_ngram-word n-gram
   with the held-out texts at clean.decontaminate_path (GPT-3's and datatrove's 13).
3. `exact_duplicate`: equal to an earlier document after clean.exact_normalize.
4. `near_duplicate`: MinHash LSH over word n-grams, as datatrove's MinhashDedup* steps
   compute it (simplify_text's normalisation, words split on spaces, sha1's first 8 bytes
   of each n-gram, (a*x + b) mod 2^61-1 in uint64 arithmetic with a and b drawn from
   numpy's RandomState(seed)); two documents are candidates when a band of rows
   signatures is equal, and with clean.near_jaccard > 0 a candidate pair counts only
   when the exact Jaccard similarity of their n-gram sets reaches it.

Memory: per document 17 bytes (exact key, reason) plus 8 bytes a band in temporary
files that are read one band at a time (10 M documents: ~170 MB and ~80 MB a band).
"""

import hashlib
import os
import re
import shutil
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from causal_lm_data.errors import UserError, printable
from causal_lm_data.format import Shard, shard_name, shards
from causal_lm_data.pipeline.executor import map_shards
from causal_lm_data.pipeline.writer import write_index, write_shard

KEPT = 0
# reason code -> name, in the order the steps apply; the metrics and data/dropped use the names
REASONS = ["kept", "too_short", "too_long", "contaminated", "exact_duplicate", "near_duplicate"]
CODE = {name: code for code, name in enumerate(REASONS)}
EXACT_NORMALIZATIONS = ("nfc", "whitespace", "casefold")

MERSENNE = np.uint64((1 << 61) - 1)

# datatrove.utils.text's PUNCTUATION (its simplify_text turns each into a space)
PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b)))
)
PUNCTUATION_SPACES = str.maketrans(PUNCTUATION, " " * len(PUNCTUATION))
# Python's \d is Unicode's Nd, as datatrove's \p{Nd}
NUMBERS = re.compile(r"\d+([.,،٫⎖⎗⎘]\d+)?")
WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class CleanConfig:
    """What clean.* asks for (see params.yaml); everything a shard's work needs besides the shard."""

    min_words: int = 0
    max_words: int = 0
    exact: bool = False
    exact_normalize: tuple[str, ...] = EXACT_NORMALIZATIONS
    near: bool = False
    near_ngram: int = 5
    near_bands: int = 14
    near_rows: int = 8
    near_seed: int = 1
    near_jaccard: float = 0.0
    decontaminate_ngram: int = 13

    @property
    def hashes(self) -> int:
        return self.near_bands * self.near_rows


def simplify(text: str) -> str:
    """datatrove's simplify_text with its defaults: lower case, numbers to 0, punctuation to spaces, one space, no diacritics."""
    text = NUMBERS.sub("0", text.lower()).translate(PUNCTUATION_SPACES)
    text = WHITESPACE.sub(" ", text.strip())
    if text.isascii():  # no combining marks to strip, and NFD leaves ASCII as it is
        return text
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn").strip()


def words_of(text: str) -> list[str]:
    simplified = simplify(text)
    return simplified.split(" ") if simplified else []


def ngram_hashes(words: list[str], n: int) -> np.ndarray:
    """The 64-bit hash of every n-word window (sha1's first 8 bytes, little-endian: datatrove's sha1_hash64)."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.sha1(" ".join(words[i : i + n]).encode()).digest()[:8], "little")
            for i in range(len(words) - n + 1)
        ),
        dtype=np.uint64,
        count=max(0, len(words) - n + 1),
    )


def permutations(config: CleanConfig) -> tuple[np.ndarray, np.ndarray]:
    """datatrove's MinhashDedupSignature.parameters: a and b of (a*x + b) mod 2^61-1, one pair per hash."""
    generator = np.random.RandomState(config.near_seed)
    a = generator.randint(1, MERSENNE, dtype=np.uint64, size=(1, config.hashes))
    b = generator.randint(0, MERSENNE, dtype=np.uint64, size=(1, config.hashes))
    return a, b


def signature(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The MinHash signature of a set of n-gram hashes (uint64 products wrap, as datatrove's do)."""
    shingles = np.unique(shingles).reshape(-1, 1)  # the minimum does not depend on repeats
    minimum = np.full(a.shape[1], np.iinfo(np.uint64).max, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(shingles), 4096):  # 4,096 x 112 x 8 bytes = 3.7 MB at a time
            values = (shingles[start : start + 4096] * a + b) % MERSENNE
            np.minimum(minimum, values.min(axis=0), out=minimum)
    return minimum


def band_keys(signatures: np.ndarray, config: CleanConfig) -> np.ndarray:
    """One 64-bit key per band: a band's rows values combined with odd multipliers (equal bands, equal keys)."""
    multipliers = np.random.RandomState(config.near_seed + 1).randint(1, 1 << 62, size=config.near_rows, dtype=np.uint64) | 1
    shaped = signatures.reshape(len(signatures), config.near_bands, config.near_rows)
    with np.errstate(over="ignore"):
        return (shaped * multipliers).sum(axis=2, dtype=np.uint64)


def normalized(text: str, steps: tuple[str, ...]) -> str:
    if "nfc" in steps:
        text = unicodedata.normalize("NFC", text)
    if "whitespace" in steps:
        text = WHITESPACE.sub(" ", text).strip()
    if "casefold" in steps:
        text = text.casefold()
    return text


def exact_key(text: str, steps: tuple[str, ...]) -> bytes:
    return hashlib.blake2b(normalized(text, steps).encode(), digest_size=16).digest()


@dataclass(frozen=True)
class ShardTask:
    """One raw shard to judge: its documents' word-count verdicts, exact keys and band keys."""

    source: Shard
    training: bool
    config: CleanConfig
    contaminants: str | None  # a .npy file of the held-out texts' sorted n-gram hashes
    bands_file: str | None  # where the band keys go (near duplicates on)


def judge_shard(task: ShardTask) -> dict:
    """Reason codes (filters and contamination), exact keys, and whether each document has a signature."""
    config = task.config
    reasons, keys, signed, characters = [], [], [], []
    contaminants = np.load(task.contaminants) if task.contaminants and task.training else None
    a, b = permutations(config) if config.near else (None, None)
    bands = []
    for batch in task.source.batches():
        for text in batch.column("text").to_pylist():
            characters.append(len(text))
            words = words_of(text) if (config.min_words or config.max_words or config.near or contaminants is not None) else []
            reason = KEPT
            if config.min_words and len(words) < config.min_words:
                reason = CODE["too_short"]
            elif config.max_words and len(words) > config.max_words:
                reason = CODE["too_long"]
            elif contaminants is not None and len(contaminants):
                grams = ngram_hashes(words, config.decontaminate_ngram)
                found = np.searchsorted(contaminants, grams)
                if len(grams) and (contaminants[np.minimum(found, len(contaminants) - 1)] == grams).any():
                    reason = CODE["contaminated"]
            reasons.append(reason)
            keys.append(exact_key(text, config.exact_normalize) if config.exact else b"")
            if config.near:
                shingles = ngram_hashes(words, config.near_ngram)
                signed.append(len(shingles) > 0)
                bands.append(signature(shingles, a, b) if len(shingles) else np.zeros(config.hashes, dtype=np.uint64))
    if config.near:
        matrix = np.stack(bands) if bands else np.zeros((0, config.hashes), dtype=np.uint64)
        np.save(task.bands_file, band_keys(matrix, config))
    return {
        "reasons": np.array(reasons, dtype=np.uint8),
        "keys": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(reasons), -1) if config.exact else None,
        "signed": np.array(signed, dtype=bool) if config.near else None,
        "characters": np.array(characters, dtype=np.int64),
    }


def contaminant_hashes(texts, n: int) -> np.ndarray:
    """The sorted, unique hashes of every n-word window of the held-out texts."""
    found = [ngram_hashes(words_of(text), n) for text in texts]
    return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.uint64)


def first_of_equal(keys: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """For each candidate index, the first candidate (in index order) with an equal key."""
    if not len(candidates):
        return candidates
    rows = np.ascontiguousarray(keys[candidates]).view(np.dtype((np.void, keys.shape[1])))[:, 0]
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    return candidates[first[inverse]]


class Clusters:
    """Union-find whose root is always the smallest index: the document a cluster keeps."""

    def __init__(self, size: int):
        self.parent = np.arange(size, dtype=np.int64)

    def find(self, index: int) -> int:
        parent = self.parent
        root = index
        while parent[root] != root:
            root = parent[root]
        while parent[index] != root:
            parent[index], index = root, parent[index]
        return int(root)

    def union(self, one: int, other: int) -> None:
        one, other = self.find(one), self.find(other)
        if one != other:
            self.parent[max(one, other)] = min(one, other)


def band_pairs(keys: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (first, other) of alive documents whose band keys are equal, `first` the smallest index of each group."""
    indices = np.flatnonzero(alive)
    values = keys[indices]
    order = np.lexsort((indices, values))
    values, indices = values[order], indices[order]
    same = np.concatenate([[False], values[1:] == values[:-1]])
    group = np.cumsum(~same) - 1
    firsts = indices[~same]
    return firsts[group[same]], indices[same]


def jaccard(one: np.ndarray, other: np.ndarray) -> float:
    one, other = np.unique(one), np.unique(other)
    union = len(np.union1d(one, other))
    return len(np.intersect1d(one, other, assume_unique=True)) / union if union else 0.0


def decide(judged: list[dict], bands_files: list[str] | None, config: CleanConfig, text_at=None) -> tuple[np.ndarray, np.ndarray]:
    """Every document's final reason and the index of the document it duplicates (-1: none), in document order.

    `judged` is judge_shard's result per shard in document order; `text_at(index)`
    gives a document's text (needed for the Jaccard check only).
    """
    reasons = np.concatenate([shard["reasons"] for shard in judged])
    duplicate_of = np.full(len(reasons), -1, dtype=np.int64)
    if config.exact:
        keys = np.concatenate([shard["keys"] for shard in judged])
        alive = np.flatnonzero(reasons == KEPT)
        first = first_of_equal(keys, alive)
        copies = first != alive
        reasons[alive[copies]] = CODE["exact_duplicate"]
        duplicate_of[alive[copies]] = first[copies]
    if config.near:
        signed = np.concatenate([shard["signed"] for shard in judged])
        alive = (reasons == KEPT) & signed
        clusters = Clusters(len(reasons))
        shingles = {}

        def shingles_of(index: int) -> np.ndarray:
            if index not in shingles:
                shingles[index] = ngram_hashes(words_of(text_at(index)), config.near_ngram)
            return shingles[index]

        checked = set()
        for band in range(config.near_bands):
            keys = np.concatenate([np.load(path, mmap_mode="r")[:, band] for path in bands_files])
            for first, other in zip(*band_pairs(keys, alive)):
                first, other = int(first), int(other)
                if config.near_jaccard > 0:
                    if (first, other) in checked:
                        continue
                    checked.add((first, other))
                    if jaccard(shingles_of(first), shingles_of(other)) < config.near_jaccard:
                        continue
                clusters.union(first, other)
        for index in np.flatnonzero(alive):
            root = clusters.find(int(index))
            if root != index:
                reasons[index], duplicate_of[index] = CODE["near_duplicate"], root
    return reasons, duplicate_of


def write_kept(source: Shard, target: Path, keep: np.ndarray, schema: pa.Schema) -> tuple[str, str, int]:
    """The shard with only the kept rows: the same file (a hard link, else a copy) when every row is kept."""
    if keep.all():
        try:
            os.link(source.path, target)
        except OSError:  # another file system, or links not allowed: the same bytes by copy
            shutil.copyfile(source.path, target)
        return target.name, source.sha256, source.rows

    def kept_batches():
        position = 0
        for batch in source.batches():
            yield batch.filter(pa.array(keep[position : position + batch.num_rows]))
            position += batch.num_rows

    rows, sha256 = write_shard(target, schema, kept_batches())
    return target.name, sha256, rows


def write_split(source_folder: Path, target_folder: Path, keep: np.ndarray, schema: pa.Schema) -> None:
    """Write one split's kept documents shard for shard (same shard names, so an untouched split is byte-identical)."""
    target_folder.mkdir(parents=True)
    inputs = shards(source_folder, stage="download")
    written, position = [], 0
    for index, shard in enumerate(inputs):
        mask = keep[position : position + shard.rows]
        position += shard.rows
        name, sha256, rows = write_kept(shard, target_folder / shard_name(index, len(inputs)), mask, schema)
        written.append((name, sha256, rows))
    write_index(target_folder, schema, written)


def judge_split(folder: Path, training: bool, config: CleanConfig, contaminants: str | None, scratch: Path, prefix: str):
    """judge_shard for every shard of one split, in parallel; results in shard order, and the band files."""
    inputs = shards(Path(folder).resolve(), stage="download")
    tasks = [
        ShardTask(shard, training, config, contaminants, str(scratch / f"{prefix}-{index:05d}.npy") if config.near else None)
        for index, shard in enumerate(inputs)
    ]
    return inputs, list(map_shards(judge_shard, tasks)), [task.bands_file for task in tasks] if config.near else []


def config_of(params: dict, section: str) -> CleanConfig:
    """clean.* as a CleanConfig; a combination no single key's range catches is one line naming the keys."""
    unknown = [step for step in params["exact_normalize"] if step not in EXACT_NORMALIZATIONS]
    if unknown:
        raise UserError(
            f"'{section}.exact_normalize' knows {', '.join(EXACT_NORMALIZATIONS)}, got {', '.join(map(repr, unknown))}"
        )
    if params["max_words"] and params["max_words"] < params["min_words"]:
        raise UserError(
            f"'{section}.max_words' ({params['max_words']}) is below '{section}.min_words' ({params['min_words']}); 0 means no maximum"
        )
    if params["near"] and params["near_bands"] * params["near_rows"] != params["near_hashes"]:
        raise UserError(
            f"'{section}.near_bands' x '{section}.near_rows' = {params['near_bands'] * params['near_rows']} must equal "
            f"'{section}.near_hashes' ({params['near_hashes']}): each band takes near_rows of the signature's hashes"
        )
    return CleanConfig(
        min_words=params["min_words"],
        max_words=params["max_words"],
        exact=params["exact"],
        exact_normalize=tuple(params["exact_normalize"]),
        near=params["near"],
        near_ngram=params["near_ngram"],
        near_bands=params["near_bands"],
        near_rows=params["near_rows"],
        near_seed=params["near_seed"],
        near_jaccard=float(params["near_jaccard"]),
        decontaminate_ngram=params["decontaminate_ngram"],
    )


def held_out_texts(path: Path, text_column: str, section: str) -> Iterator[str]:
    """Every document of the held-out file, or of every data file of the folder (sorted), for decontamination.

    A folder is listed by download's one rule (readers.folder_files: hidden names skipped, links
    out of it refused); a file of no readable format other than README/LICENSE-like ones is refused,
    naming it, as download refuses it: decontamination must not silently skip an eval set.
    """
    from causal_lm_data.pipeline.raw import text_of
    from causal_lm_data.pipeline.readers import file_batches, folder_files, is_not_data, readable

    if not path.exists():
        raise UserError(f"'{section}.decontaminate_path' names {path}, which does not exist; point it at the held-out texts")
    listed = [path] if path.is_file() else [path / name for name in folder_files(path).files]
    files = [file for file in listed if readable(file)]
    unread = [str(file) for file in listed if file not in files and not is_not_data(file.name)]
    if unread:
        raise UserError(
            f"'{section}.decontaminate_path' holds files of no readable format: {', '.join(map(printable, unread))}; remove them"
        )
    if not files:
        raise UserError(f"'{section}.decontaminate_path' ({path}) holds no data file to read the held-out texts from")
    for file in files:
        for table in file_batches(file, text_column):
            texts, _ = text_of(table, text_column, where=f"{file}: ")
            yield from texts.to_pylist()
