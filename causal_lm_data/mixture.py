"""Several corpora mixed by weight, under the name training code imports: the numpy side
(causal_lm_data.mixed) and, on first use, the torch side (causal_lm_data.torch_loader).

    from causal_lm_data.mixture import MixedBlocks, read_plan

This module only gives names; it sits above both sides, so the read side imports in
one line: format -> plan -> blocks -> mixed -> torch_loader -> mixture, loader.
Importing it loads numpy, not torch.
"""

from causal_lm_data import mixed as _mixed

# Every name of the numpy side (private ones too: code written against this module used them).
globals().update({name: value for name, value in vars(_mixed).items() if not name.startswith("__")})

# The torch side, importable from here as it always was (this module defined the first four,
# and gave the single corpus' others).
_TORCH_SIDE = (
    *("MixedBlocks", "MixtureBatches", "MixtureLoader", "mixture_loader"),
    *("Blocks", "BlockBatches", "BlockLoader", "batch_as_is"),
)


def __getattr__(name: str):
    if name in _TORCH_SIDE:
        from causal_lm_data import torch_loader

        return getattr(torch_loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_TORCH_SIDE})


# `from causal_lm_data.mixture import *` gives what it gave when the torch side was defined here
# (every public name of the numpy side), the torch side included: it imports torch then, as it did.
__all__ = [name for name in vars(_mixed) if not name.startswith("_")] + list(_TORCH_SIDE)
