"""The write side: what the DVC stages in `stages/` run to build data/.

Per-shard work is a pure function of a frozen task (raw.py: documents of a corpus,
tokenized.py: token ids, grouped.py: blocks) that executor.py runs on this machine's
cores or on a Dask cluster; readers.py reads corpora, inputs.py pins what is read,
writer.py writes folders atomically in the format causal_lm_data.format specifies.
"""
