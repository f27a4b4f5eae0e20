"""The one place that reads and validates params.yaml."""

import re
from pathlib import Path

from causal_lm_data.errors import UserError

PARAMS_FILE = Path("params.yaml")

# Longest document and block, in tokens: 2^20 = 1,048,576, longer than any model's
# context today. Bounds keep a typo (3000000000) from becoming a MemoryError or
# an overflow hours into a run; Arrow's 32-bit list offsets would fail far later.
MAX_TOKENS = 1 << 20
MAX_BATCH = 1 << 16

# Keys whose empty value (null or '') means "not chosen": the dataset's default.
MAY_BE_EMPTY = {"download.config", "download.data_dir", "download.source_field", "download.source_value"}

# section -> key -> (type or types, smallest allowed value or None, largest or None)
SCHEMA = {
    "download": {
        "dataset": (str, None, None),
        "local_path": (str, None, None),
        "revision": (str, None, None),
        "config": ((str, type(None)), None, None),
        "data_dir": ((str, type(None)), None, None),
        "split": (str, None, None),
        "text_column": (str, None, None),
        "source_field": ((str, type(None)), None, None),
        "source_value": ((str, type(None)), None, None),
        "data_files": (list, None, None),
        "validation_size": ((int, float), 0, None),
        "seed": (int, 0, None),
        "shard_mb": (int, 1, 1024),
    },
    "tokenize": {
        "tokenizer": (str, None, None),
        "local_path": (str, None, None),
        "revision": (str, None, None),
        "truncation": (bool, None, None),
        "max_length": (int, 1, MAX_TOKENS),
        "add_bos": (bool, None, None),
        "add_eos": (bool, None, None),
    },
    "clean": {
        "min_words": (int, 0, MAX_TOKENS),
        "max_words": (int, 0, None),
        "exact": (bool, None, None),
        "exact_normalize": (list, None, None),
        "near": (bool, None, None),
        "near_ngram": (int, 1, 64),
        "near_bands": (int, 1, 1024),
        "near_rows": (int, 1, 1024),
        "near_hashes": (int, 1, 4096),
        # numpy's RandomState takes seeds below 2^32
        "near_seed": (int, 0, (1 << 32) - 2),
        "near_jaccard": ((int, float), 0, 1),
        "decontaminate": (bool, None, None),
        "decontaminate_path": (str, None, None),
        "decontaminate_text_column": (str, None, None),
        "decontaminate_ngram": (int, 1, 1024),
    },
    "group": {"block_size": (int, 1, MAX_TOKENS), "shard_mb": (int, 1, 1024)},
    "loader": {"batch_size": (int, 1, MAX_BATCH), "shuffle": (bool, None, None), "seed": (int, 0, None)},
}

# A corpus of `corpora` names its `dataset` and `local_path` (dvc.yaml's dependency);
# its other keys, when left out, take these values (the defaults of `download`).
CORPUS_DEFAULTS = {
    "revision": "main",
    "config": None,
    "data_dir": None,
    "split": "train",
    "text_column": "text",
    "source_field": None,
    "source_value": None,
    "data_files": [],
    "validation_size": 0,
    "seed": 42,
    "shard_mb": 64,
}

# The recipe: `corpora` (more corpora, each with download's keys) and `mixture`.
RECIPE_SECTIONS = ("corpora", "mixture")
MAIN_CORPUS = "main"  # the corpus of the `download` section, in mixture.weights
CORPUS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MIXTURE = {
    "weights": (dict, None, None),
    "max_repetition": ((int, float), 1, None),
    "epoch_blocks": (int, 0, None),
}


def _check_section(name: str, values, keys: dict) -> None:
    """Check one section (`name` is how messages call it) against its keys' (types, minimum, maximum)."""
    if not isinstance(values, dict):
        raise UserError(f"{PARAMS_FILE} needs a '{name}' section with keys: {', '.join(keys)}")
    for key in values:
        if key not in keys:
            raise UserError(f"unknown key '{name}.{key}' in {PARAMS_FILE}; known: {', '.join(keys)}")
    for key, (expected, minimum, maximum) in keys.items():
        dotted = f"{name}.{key}"
        if key not in values:
            raise UserError(f"missing '{dotted}' in {PARAMS_FILE}")
        value = values[key]
        types = expected if isinstance(expected, tuple) else (expected,)
        # bool is a subclass of int in Python: `block_size: true` must not pass as 1.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            type_names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise UserError(f"'{dotted}' must be {type_names}, got {value!r} ({type(value).__name__})")
        if isinstance(value, str) and not value.strip() and f"download.{key}" not in MAY_BE_EMPTY:
            raise UserError(f"'{dotted}' must not be empty")
        if isinstance(value, list) and not all(isinstance(item, str) and item.strip() for item in value):
            raise UserError(f"'{dotted}' must be a list of non-empty strings, got {value!r}")
        if minimum is not None and not value >= minimum:  # NaN too
            raise UserError(f"'{dotted}' must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise UserError(f"'{dotted}' must be <= {maximum:,}, got {value:,}")


def _check_validation_size(dotted: str, value: int | float) -> None:
    """A fraction below 1 (0.1) or a whole count (1000): anything else is refused before any work, not after the download."""
    if isinstance(value, float) and not 0 <= value < 1:  # NaN and .inf too
        whole = f" (a count is written without a point: {int(value)})" if value.is_integer() and value >= 1 else ""
        raise UserError(f"'{dotted}' must be a fraction below 1 (0.1) or a whole count of documents (1000), got {value}{whole}")


def _check_download(name: str, values: dict) -> None:
    """The rules of download's keys that their types and bounds do not say."""
    _check_validation_size(f"{name}.validation_size", values["validation_size"])
    field, text_column = values["source_field"], values["text_column"]
    if field and field == text_column:
        raise UserError(
            f"'{name}.source_field' is '{field}', the text column ({name}.text_column): set it to the field "
            "that names each document's source (meta.pile_set_name), or set both source keys to null"
        )


def _check_recipe(params: dict) -> None:
    """`corpora`: more corpora, each with download's keys; `mixture`: a weight for each corpus, and its limits."""
    corpora = params.get("corpora", {})
    if not isinstance(corpora, dict):
        raise UserError(f"'corpora' in {PARAMS_FILE} must map corpus names to their download settings, got {corpora!r}")
    for name, values in corpora.items():
        if not (isinstance(name, str) and CORPUS_NAME.fullmatch(name)) or name == MAIN_CORPUS:
            raise UserError(
                f"corpus name {name!r} must be letters, digits, '-' or '_' (it names folders and stages), and not '{MAIN_CORPUS}'"
            )
        if not isinstance(values, dict):
            raise UserError(f"corpora.{name} in {PARAMS_FILE} must be a mapping of download settings, got {values!r}")
        values.update({key: value for key, value in CORPUS_DEFAULTS.items() if key not in values})
        _check_section(f"corpora.{name}", values, SCHEMA["download"])
        _check_download(f"corpora.{name}", values)
    mixture = params.get("mixture")
    _check_section("mixture", mixture, MIXTURE)
    weights = mixture["weights"]
    for name, weight in weights.items():
        if name != MAIN_CORPUS and name not in corpora:
            raise UserError(f"mixture.weights names '{name}', which is no corpus; known: {', '.join([MAIN_CORPUS, *corpora])}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or weight == float("inf"):
            raise UserError(f"'mixture.weights.{name}' must be a number >= 0, got {weight!r}")
    missing = [name for name in [MAIN_CORPUS, *corpora] if name not in weights]
    if missing:
        raise UserError(f"corpora {', '.join(missing)} have no weight; set mixture.weights.<corpus> (0 leaves one out)")


def validate(params: dict) -> dict:
    """Check every section and key against SCHEMA (and the recipe); return params, each corpus given its defaults, or raise UserError."""
    if not isinstance(params, dict):
        raise UserError(f"{PARAMS_FILE} must be a mapping of sections, got {type(params).__name__}")
    for section in params:
        if section not in SCHEMA and section not in RECIPE_SECTIONS:
            raise UserError(f"unknown section '{section}' in {PARAMS_FILE}; known: {', '.join([*SCHEMA, *RECIPE_SECTIONS])}")
    for section, keys in SCHEMA.items():
        _check_section(section, params.get(section), keys)
    _check_download("download", params["download"])
    _check_recipe(params)
    return params


def load_params(section: str, path: Path = PARAMS_FILE) -> dict:
    """Return one validated section of params.yaml (the whole file is validated).

    The file is parsed exactly as DVC parses it (ruamel.yaml, YAML 1.2), so the
    values a stage runs with are the ones `dvc.lock` and `dvc params diff` show:
    PyYAML's YAML 1.1 would read `block_size: 010` as 8 where DVC records 10.
    """
    from ruamel.yaml import YAML, YAMLError

    try:
        params = YAML(typ="safe").load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found; run from the repository root") from None
    except (YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    found = validate(params)
    for key in section.split("."):  # a dotted section: corpora.web
        if not isinstance(found, dict) or key not in found:
            raise UserError(f"no section '{section}' in {path}")
        found = found[key]
    return found
