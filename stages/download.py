"""Stage download: read the corpus that params.yaml names (the built-in one, a Hub dataset, or local or
remote files) and write its text, one document per row, to the raw folder.

As dvc.yaml runs it:

    python -m stages.download --params download --output data/raw --metrics metrics/download.json

Empty documents are skipped and counted; with validation_size, the raw folder holds
`train` and `validation` splits, and the metrics' `documents` and `characters` are the
training split's, the held-out split's under `validation` (as in every stage's
metrics). A local corpus (a file, or a folder read whole) is converted in parallel,
files and parquet row groups being the units of work; the built-in corpus, remote
files and Hub datasets stream through one process. Readers
are causal_lm_data.pipeline.readers', the work per shard causal_lm_data.pipeline.raw's.
"""

import shutil

from causal_lm_data.errors import UserError
from causal_lm_data.format import read_batches
from causal_lm_data.pipeline.command import arguments, run_stage
from causal_lm_data.pipeline.executor import worker_count
from causal_lm_data.pipeline.formats import format_of
from causal_lm_data.pipeline.inputs import pin_local, require_unchanged, resolve_input
from causal_lm_data.pipeline.params import load_params
from causal_lm_data.pipeline.progress import Progress, all_splits, over_splits
from causal_lm_data.pipeline.raw import SCHEMA, cleaned_pieces, convert_files, held_out, masked, new_counts, source_filter
from causal_lm_data.pipeline.readers import (
    BUILTIN_CORPUS,
    dataset_options,
    describe_options,
    load_batches,
    local_files,
    parquet_row_groups,
)
from causal_lm_data.pipeline.writer import replacing, split_metrics, write_dataset, write_json, write_split_names


def main() -> None:
    args = arguments(__doc__, "output", "metrics")
    params = load_params(args.params)
    worker_count()  # a bad PIPELINE_WORKERS fails now
    shard_bytes = params["shard_mb"] << 20
    source = resolve_input(args.params, "dataset", params, builtins=[BUILTIN_CORPUS], urls=True)
    options = dataset_options(source, params)
    keep = source_filter(params, args.params)
    # Before anything of it is read: DVC hashes a local input after the stage, and must find what was read.
    pinned = pin_local(source.name) if source.kind == "local" else None
    local = local_files(source, params["split"], params["data_files"], options.get("name"), options.get("data_dir"))
    counts = new_counts()
    if local:
        version = "local: hashed in dvc.lock"
        parquet = all(format_of(path) == ".parquet" for path in local.files)
        rows = sum(rows for path in local.files for rows, _ in parquet_row_groups(path)) if parquet else None
    else:
        source_field = keep[0] if keep else None  # as convert_files reads a local file: the field filtered on
        batches, version = load_batches(source, params["split"], params["text_column"], source_field=source_field, **options)
        rows = None
    progress = Progress("download", total=rows)

    with replacing(args.output) as output:
        # With a validation split, every document is written once, then divided.
        everything = output / "all" if params["validation_size"] else output
        if local:
            convert_files(local.files, everything, params["text_column"], shard_bytes, counts, progress, keep)
        else:
            pieces = cleaned_pieces(progress.counted(batches), params["text_column"], counts, shard_bytes, keep=keep)
            write_dataset(everything, SCHEMA, pieces, shard_bytes)
        progress.close()
        if counts["documents"] == 0:
            raise UserError(f"dataset '{source.name}' split '{params['split']}' has no non-empty documents")
        if params["validation_size"]:
            mask = held_out(counts["documents"], params["validation_size"], params["seed"])
            chosen = {"train": ~mask, "validation": mask}
            written = {split: {"documents": 0, "characters": 0} for split in chosen}
            for split, rows in chosen.items():
                batches = masked(read_batches(everything, "download"), rows, written[split])
                write_dataset(output / split, SCHEMA, batches, shard_bytes)
            write_split_names(output, list(chosen))
            shutil.rmtree(everything)
            # As in every stage's metrics: `documents` and `characters` are the training split's,
            # the held-out split's sit under `validation`; the skipped documents are in neither.
            counts |= split_metrics(written)
        if pinned:  # inside `replacing`: a corpus that changed while read leaves no output
            require_unchanged(pinned, args.params)
        if local:  # which files were read, and which were not (README.md, LICENSE...): none silently
            counts |= {"files": len(local.files), "files_not_read": local.not_data}
        # Inside `replacing`: if the metrics cannot be written, no new output appears either.
        described = f"{source.name} ({source.describe()}{describe_options(options)})"
        write_json(args.metrics, {**counts, "source": described, "version": version})
    documents = over_splits(counts, "documents", "documents")
    print(f"download: {documents}, {all_splits(counts, 'characters'):,} characters -> {args.output}")


if __name__ == "__main__":
    run_stage(main)
