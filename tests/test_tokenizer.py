import numpy as np
import pytest

from causal_lm_data.errors import UserError
from causal_lm_data.pipeline.readers import builtin_documents
from causal_lm_data.tokenizer import PROBE, Encoder, load_encoder, load_tokenizer
from tests import tokenizer_folders
from tests.helpers import assert_engine_exact


@pytest.fixture(scope="module")
def distilgpt2():
    return load_tokenizer("distilgpt2")


def test_builtin_tokenizer_has_gpt2s_known_ids(distilgpt2):
    assert distilgpt2("Hello world")["input_ids"] == [15496, 995]
    assert distilgpt2(" Hello world")["input_ids"] == [18435, 995]
    assert distilgpt2.eos_token_id == 50256 and distilgpt2.pad_token_id == 50256
    assert len(distilgpt2) == 50257
    assert distilgpt2.decode([15496, 995]) == "Hello world"


def test_gpt2_and_distilgpt2_are_the_same_tokenizer(distilgpt2):
    text = "The quick brown fox — naïve café, 1,234 ids!"
    assert load_tokenizer("gpt2")(text)["input_ids"] == distilgpt2(text)["input_ids"]


TRICKY = [
    "",
    " ",
    "   leading and trailing   ",
    "tabs\tand\nnewlines\r\n\n\n",
    "<|endoftext|>",
    "a<|endoftext|>b <|endoftext|> c",
    "control \x00\x01\x07\x1b[31m chars",
    "emoji 😀👍🏽 and CJK 漢字かな한국어, math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, private \U000f0000 plane",
    "combining e\u0301 and zero\u200bwidth",
    "numbers 1234567890 3.14159 -42",
    "don't we'll they're I've she'd 'quoted'",
    "x" * 5000,
]


def adversarial_documents(count: int = 3000, seed: int = 0) -> list[str]:
    """Seeded hostile text: every Unicode plane, controls, long runs of spaces and digits, special-token text."""
    rng = np.random.default_rng(seed)
    planes = [
        (0, 0x7F),
        (0x80, 0x7FF),
        (0x800, 0xD7FF),
        (0xE000, 0xFFFF),
        (0x10000, 0x1FFFF),
        (0x20000, 0x3FFFF),
        (0xE0000, 0xE007F),
        (0xF0000, 0x10FFFD),
    ]
    pieces = [
        " " * 40,
        "\n" * 9,
        "\t \r\n",
        "9" * 60,
        "<|endoftext|>",
        "<s>",
        "</s>",
        "<unk>",
        "\x00",
        "\x1b[0m",
        "'s 'll 're",
        "e\u0301",
        "\u200d",
        "Hello world",
    ]
    documents = []
    for _ in range(count):
        parts = []
        for _ in range(rng.integers(1, 12)):
            if rng.random() < 0.4:
                parts.append(pieces[rng.integers(len(pieces))])
            else:
                low, high = planes[rng.integers(len(planes))]
                parts.append("".join(map(chr, rng.integers(low, high + 1, size=rng.integers(1, 20)))))
        documents.append("".join(parts))
    return documents


@pytest.fixture(scope="module")
def corpora():
    return {"built-in corpus": list(builtin_documents()), "tricky": TRICKY + PROBE, "adversarial": adversarial_documents()}


def test_gpt2_uses_the_fast_engine_and_it_is_exact(distilgpt2, corpora):
    encoder = Encoder(distilgpt2)
    assert encoder.engine == "fastokens" and encoder.fallback is None
    for documents in corpora.values():
        assert_engine_exact(encoder, distilgpt2, documents)


def test_qwen_past_65536_ids_uses_the_fast_engine_and_it_is_exact(tmp_path, corpora):
    folder = tokenizer_folders.qwen(tmp_path / "qwen")
    reference = load_tokenizer(str(folder))
    encoder = load_encoder(str(folder))
    assert encoder.engine == "fastokens" and encoder.id_limit == 151_644
    for documents in corpora.values():
        assert_engine_exact(encoder, reference, documents)
    ids, _ = encoder.encode(["<|endoftext|>"])
    assert ids.tolist() == [151_643]


def test_sentencepiece_falls_back_to_transformers_and_says_why(tmp_path, corpora):
    folder = tokenizer_folders.mistral_v01(tmp_path / "mistral")
    encoder = load_encoder(str(folder))
    assert encoder.engine == "transformers" and "Metaspace" in encoder.fallback
    assert (encoder.bos_token_id, encoder.eos_token_id, encoder.id_limit) == (1, 2, 32_000)
    ids, lengths = encoder.encode(["Hello world", ""])
    assert ids.tolist() == [22557, 1526] and lengths.tolist() == [2, 0]
    assert_engine_exact(encoder, load_tokenizer(str(folder)), corpora["adversarial"][:300])


def test_an_engine_that_differs_on_the_check_text_is_not_used(distilgpt2, monkeypatch):
    """The fallback on a mismatch: a fast engine whose ids differ from the reference's is refused."""

    def shifted(self, texts):
        ids, lengths = original(self, texts)
        return ids + (ids == 995), lengths  # "world" becomes another token

    original = Encoder._encode_fast
    monkeypatch.setattr(Encoder, "_encode_fast", shifted)
    encoder = Encoder(distilgpt2)
    assert encoder.engine == "transformers" and "different ids" in encoder.fallback
    assert encoder.encode(["Hello world"])[0].tolist() == [15496, 995]


def test_the_encoder_pickles_for_worker_processes(distilgpt2):
    import pickle

    copy = pickle.loads(pickle.dumps(Encoder(distilgpt2)))
    assert copy.engine == "fastokens" and copy.tokenizer is None  # workers never import transformers
    assert copy.encode(["Hello world"])[0].tolist() == [15496, 995]


def test_local_tokenizer_folder_goes_through_autotokenizer(tmp_path, distilgpt2):
    distilgpt2.save_pretrained(tmp_path / "my-tokenizer")
    encoder = load_encoder(str(tmp_path / "my-tokenizer"))
    assert encoder.id_limit == 50257 and encoder.eos_token_id == 50256
    assert encoder.encode(["Hello world"])[0].tolist() == [15496, 995]


def test_unknown_tokenizer_is_a_one_line_error():
    with pytest.raises(UserError, match="unknown tokenizer 'no-such-tokenizer-xyz'") as error:
        load_tokenizer("no-such-tokenizer-xyz")
    assert "\n" not in str(error.value)


def test_the_stage_stores_qwen_ids_as_uint32_and_puts_mistrals_bos_first(tmp_path):
    import datasets

    from tests.helpers import stage_in

    texts = ["The Congress shall have power.", "Tokens past 65,535: 日本語のテキスト", "<|endoftext|> in the text"]
    (tmp_path / "corpus.txt").write_text("\n".join(texts) + "\n")
    corpus = {"download__dataset": "local", "download__local_path": str(tmp_path / "corpus.txt")}
    assert stage_in(tmp_path, "download", **corpus).returncode == 0
    for name, folder, extra in [
        ("qwen", tokenizer_folders.qwen(tmp_path / "qwen"), {"tokenize__add_eos": True}),
        ("mistral", tokenizer_folders.mistral_v01(tmp_path / "mistral"), {"tokenize__add_bos": True}),
    ]:
        result = stage_in(tmp_path, "tokenize", tokenize__tokenizer="local", tokenize__local_path=str(folder), **corpus, **extra)
        assert result.returncode == 0, result.stderr
        stored = datasets.load_from_disk(str(tmp_path / "data" / "tokenized"))
        reference = load_tokenizer(str(folder))(texts, add_special_tokens=False)["input_ids"]
        if name == "qwen":
            assert stored.features["input_ids"].feature.dtype == "uint32"
            assert stored["input_ids"] == [ids + [151_643] for ids in reference]
            assert max(max(ids) for ids in reference) > 65_535
        else:
            assert "Metaspace" in result.stdout
            assert stored["input_ids"] == [[1] + ids for ids in reference]
