"""Lab1's method, as the benchmark's reference: `datasets.map` tokenization, Python
`_flatten` grouping in a batched map, and a DataLoader over the Hugging Face dataset.

    python bench/lab1_reference.py CORPUS.parquet CACHE_DIR   # prints JSON timings
"""

import json
import sys
import time

import torch
from datasets import load_dataset
from torch.utils.data import DataLoader

from causal_lm_data.tokenizer import load_tokenizer

BLOCK_SIZE = 128


def _flatten(list_of_lists):
    return [item for sublist in list_of_lists for item in sublist]


def group_texts(examples):
    concatenated = {key: _flatten(examples[key]) for key in examples}
    total = len(concatenated["input_ids"]) // BLOCK_SIZE * BLOCK_SIZE
    return {key: [ids[i : i + BLOCK_SIZE] for i in range(0, total, BLOCK_SIZE)] for key, ids in concatenated.items()}


def collate(batch):
    input_ids = torch.stack([example["input_ids"] for example in batch])
    return {"input_ids": input_ids, "labels": input_ids.clone()}


def main(corpus: str, cache_dir: str) -> None:
    seconds = {}
    start = time.perf_counter()
    dataset = load_dataset("parquet", data_files=corpus, split="train", cache_dir=cache_dir)
    tokenizer = load_tokenizer("distilgpt2")
    seconds["download"] = time.perf_counter() - start

    start = time.perf_counter()
    tokenized = dataset.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=512),
        batched=True,
        remove_columns=dataset.column_names,
    )
    seconds["tokenize"] = time.perf_counter() - start

    start = time.perf_counter()
    grouped = tokenized.map(group_texts, batched=True)
    grouped.set_format("torch", columns=["input_ids"])
    seconds["group"] = time.perf_counter() - start

    loader = DataLoader(grouped, batch_size=8, shuffle=True, collate_fn=collate)
    start = time.perf_counter()
    tokens = sum(batch["input_ids"].numel() for batch in loader)
    seconds["epoch"] = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "tokens": sum(map(len, tokenized["input_ids"])), "epoch_tokens": tokens}))


if __name__ == "__main__":
    main(*sys.argv[1:])
