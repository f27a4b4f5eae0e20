"""DVC stages that turn a text corpus into fixed-length causal-LM training blocks.

download -> tokenize -> group -> check; `stages.loader` serves the blocks to PyTorch.
"""
