"""`python -m causal_lm_data ...`: the same commands as the `causal-lm-data` console script."""

from causal_lm_data.cli import main

main()
