"""Every name training code imported from causal_lm_data.loader and causal_lm_data.mixture before the torch
boundary moved to causal_lm_data.torch_loader still imports from there: one by one, by `import *`, in dir()."""

import pytest
import torch

from tests.helpers import write_three_corpora

# The public classes and functions each module gave before torch_loader.py (commit 006ab31).
BEFORE = {
    "causal_lm_data.loader": ["Blocks", "BlockBatches", "BlockLoader", "batch_as_is", "Permutation", "fingerprint"],
    "causal_lm_data.mixture": [
        "MixedBlocks", "MixtureBatches", "MixtureLoader", "mixture_loader", "read_plan", "plan_folder",
        "Blocks", "BlockBatches", "BlockLoader", "batch_as_is", "Permutation",
    ],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(BEFORE))
def test_every_name_still_imports_one_by_one_by_star_and_in_dir(module):
    star = {}
    exec(f"from {module} import *", star)
    imported = __import__(module, fromlist=["_"])
    for name in BEFORE[module]:
        assert getattr(imported, name) is not None, name
        assert name in star, f"from {module} import * lacks {name}"
        assert name in dir(imported), name


def test_mixture_loader_still_serves_the_plan(tmp_path):
    from causal_lm_data.loader import make_dataloader
    from causal_lm_data.mixture import MixtureLoader, mixture_loader

    plan = write_three_corpora(tmp_path)
    old, new = mixture_loader(plan, batch_size=4, seed=3), make_dataloader(plan, batch_size=4, seed=3)
    assert isinstance(old, MixtureLoader)
    for a, b in zip(old, new, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
