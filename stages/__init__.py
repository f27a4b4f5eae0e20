"""DVC stages that turn a text corpus into fixed-length causal-LM training blocks.

download -> tokenize -> group -> check; `causal_lm_data.loader` serves the blocks to PyTorch.
"""
