"""Causal-LM training data: the read side a training loop imports.

    from causal_lm_data import make_dataloader
    loader = make_dataloader("data/grouped", batch_size=8)

Names are imported on first use, so `import causal_lm_data.pipeline...` (the DVC
stages) does not load torch, and a training process that builds a loader loads
numpy, pyarrow and torch, nothing of the write side (the batches are computed in
numpy; torch is their boundary, causal_lm_data.torch_loader).
"""

import importlib

# public name -> the module that defines it
_PUBLIC = {
    "make_dataloader": "causal_lm_data.loader",
    "from_params": "causal_lm_data.loader",
    "Blocks": "causal_lm_data.loader",
    "BlockLoader": "causal_lm_data.loader",
    "MixedBlocks": "causal_lm_data.mixture",
    "load_tokenizer": "causal_lm_data.tokenizer",
    "UserError": "causal_lm_data.errors",
    "FolderError": "causal_lm_data.format",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'causal_lm_data' has no attribute '{name}'")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return __all__
