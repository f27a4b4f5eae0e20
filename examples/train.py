"""Train a small GPT-2 on this repository's blocks: the loop a teammate runs after `dvc pull`.

    python examples/train.py --steps 200

The loader serves what the check stage validated, with params.yaml's `loader` section
(`from_params`): by default the recipe's plan (data/mix.json) when params.yaml mixes
more than the main corpus, else data/grouped (run it from the repository's root).
The model is GPT-2's architecture at toy width (2 layers of 64), so a few hundred
steps run on a CPU; its loss starts near ln(vocabulary) = 10.8 for GPT-2's 50,257
ids and falls as it learns the corpus' token statistics.
"""

import argparse

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from causal_lm_data import from_params, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=None,
        help="a grouped folder or a mixture plan (default: data/mix.json when the recipe mixes corpora, else data/grouped)",
    )
    parser.add_argument("--tokenizer", default="distilgpt2", help="the tokenize.tokenizer the data was built with")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()

    torch.manual_seed(0)
    loader = from_params(args.data)  # batch_size, shuffle, seed from params.yaml
    block_size = loader.dataset[0]["input_ids"].shape[-1]
    config = GPT2Config(
        vocab_size=len(load_tokenizer(args.tokenizer)),
        n_positions=block_size,
        n_embd=64,
        n_layer=2,
        n_head=2,
        loss_type="ForCausalLM",
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    step = 0
    while step < args.steps:
        for batch in loader:  # {"input_ids", "labels"}: int64 (batch_size, block_size)
            logits = model(input_ids=batch["input_ids"]).logits
            # Position t predicts token t + 1: labels == input_ids, shifted here.
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step == 1 or step % 50 == 0 or step == args.steps:
                print(f"step {step}: loss {loss.item():.3f}")
            if step == args.steps:
                break


if __name__ == "__main__":
    main()
