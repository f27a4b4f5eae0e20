"""Progress for long stages: a tqdm bar on a terminal (with a total and an ETA when the total is known), nothing in logs or under CI."""

import sys

from tqdm import tqdm


class Progress:
    """Counts documents (and tokens) for a stage: `label: 40%|████ | 10,000/25,488 [00:02<00:03, 4,830 docs/s, 2.1M tokens/s]`."""

    def __init__(self, label: str, stream=sys.stderr, total: int | None = None):
        self.bar = tqdm(
            desc=label,
            total=total,
            unit=" docs",
            unit_scale=True,
            file=stream,
            disable=not stream.isatty(),
            mininterval=0.5,
            dynamic_ncols=True,
            leave=True,
        )
        self.tokens = 0

    def update(self, documents: int, tokens: int = 0) -> None:
        self.tokens += tokens
        if tokens and not self.bar.disable:
            elapsed = max(self.bar.format_dict["elapsed"], 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / elapsed / 1e6:,.1f}M tokens/s", refresh=False)
        self.bar.update(documents)

    def counted(self, tables):
        """Pass `tables` through, counting their rows as documents."""
        for table in tables:
            yield table
            self.update(table.num_rows)

    def close(self) -> None:
        self.bar.close()


def all_splits(metrics: dict, key: str) -> int:
    """metrics[key] summed over the splits of a stage's metrics (causal_lm_data.pipeline.writer.split_metrics:
    the training split's counts, a held-out split's under `validation`)."""
    return metrics[key] + metrics.get("validation", {}).get(key, 0)


def over_splits(metrics: dict, key: str, unit: str) -> str:
    """all_splits as a stage line prints it, each split's part too when there is a held-out one.

    So a stage line counts everything the stage wrote: "25,488 documents", or
    "25,488 documents (24,213 train + 1,275 validation)".
    """
    if "validation" not in metrics:
        return f"{metrics[key]:,} {unit}"
    return f"{all_splits(metrics, key):,} {unit} ({metrics[key]:,} train + {metrics['validation'][key]:,} validation)"
