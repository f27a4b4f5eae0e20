"""Reference engines the benchmark compares against: GPT-2 in tiktoken, built from the same packaged files."""

import json
import sys

import tiktoken

from causal_lm_data.tokenizer import EOS_TOKEN, gpt2_files

# GPT-2's pre-tokenizer regex, as in tiktoken's r50k/gpt2 encodings
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def tiktoken_gpt2() -> tiktoken.Encoding:
    """GPT-2's BPE as a tiktoken Encoding (ids equal transformers' and fastokens')."""
    # The byte <-> printable-character table GPT-2's encoder.json keys are written in.
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    unprintable = [b for b in range(256) if b not in printable]
    char_to_byte = {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(unprintable)}
    vocabulary = json.loads(gpt2_files()["encoder.json"].read_text(encoding="utf-8"))
    eos = vocabulary.pop(EOS_TOKEN)
    ranks = {bytes(char_to_byte[c] for c in token): rank for token, rank in vocabulary.items()}
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOS_TOKEN: eos})


def stage_command(repo, stage: str) -> list[str]:
    """A stage's command as the repository's dvc.yaml writes it, run with this Python."""
    from pathlib import Path

    from causal_lm_data.pipeline.command import stage_command as dvc_stage_command

    words = dvc_stage_command(Path(repo) / "dvc.yaml", stage, Path(repo) / "params.yaml")
    return [sys.executable if word == "python" else word for word in words]
