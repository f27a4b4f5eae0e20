import pytest

from stages.errors import UserError
from stages.sources import builtin_documents
from stages.tokenizer import TiktokenGPT2, load_encoder, load_tokenizer


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


def test_tiktoken_engine_equals_transformers_on_tricky_text(distilgpt2):
    encoder = TiktokenGPT2(threads=2)
    for text, ids in zip(TRICKY, encoder.encode(TRICKY)):
        assert ids.tolist() == distilgpt2(text)["input_ids"], repr(text)


def test_tiktoken_engine_equals_transformers_on_the_whole_builtin_corpus(distilgpt2):
    documents = list(builtin_documents())
    expected = distilgpt2(documents)["input_ids"]
    for threads in (1, 2):
        actual = TiktokenGPT2(threads).encode(documents)
        assert len(actual) == len(expected) == 25_488
        mismatched = [i for i, (a, e) in enumerate(zip(actual, expected)) if a.tolist() != e]
        assert mismatched == [], f"{len(mismatched)} documents differ, first: {documents[mismatched[0]][:80]!r}"


def test_local_tokenizer_folder_goes_through_autotokenizer(tmp_path, distilgpt2):
    distilgpt2.save_pretrained(tmp_path / "my-tokenizer")
    encoder = load_encoder(str(tmp_path / "my-tokenizer"))
    assert type(encoder).__name__ == "TransformersTokenizer"
    assert encoder.id_limit == 50257 and encoder.eos_token_id == 50256
    [ids] = encoder.encode(["Hello world"])
    assert ids.tolist() == [15496, 995]


def test_unknown_tokenizer_is_a_one_line_error():
    with pytest.raises(UserError, match="unknown tokenizer 'no-such-tokenizer-xyz'") as error:
        load_tokenizer("no-such-tokenizer-xyz")
    assert "\n" not in str(error.value)
