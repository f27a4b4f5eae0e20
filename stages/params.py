"""The one place that reads and validates params.yaml."""

from pathlib import Path

import yaml

from stages.errors import UserError

PARAMS_FILE = Path("params.yaml")

# section -> key -> (type or types, smallest allowed value or None)
SCHEMA = {
    "download": {
        "dataset": (str, None),
        "split": (str, None),
        "text_column": (str, None),
        "validation_size": ((int, float), 0),
        "seed": (int, 0),
    },
    "tokenize": {"tokenizer": (str, None), "truncation": (bool, None), "max_length": (int, 1), "add_eos": (bool, None)},
    "group": {"block_size": (int, 1)},
    "loader": {"batch_size": (int, 1), "shuffle": (bool, None), "seed": (int, 0)},
}


def validate(params: dict) -> dict:
    """Check every section and key against SCHEMA; return params unchanged or raise UserError."""
    if not isinstance(params, dict):
        raise UserError(f"{PARAMS_FILE} must be a mapping of sections, got {type(params).__name__}")
    for section in params:
        if section not in SCHEMA:
            raise UserError(f"unknown section '{section}' in {PARAMS_FILE}; known: {', '.join(SCHEMA)}")
    for section, keys in SCHEMA.items():
        values = params.get(section)
        if not isinstance(values, dict):
            raise UserError(f"{PARAMS_FILE} needs a '{section}' section with keys: {', '.join(keys)}")
        for key in values:
            if key not in keys:
                raise UserError(f"unknown key '{section}.{key}' in {PARAMS_FILE}; known: {', '.join(keys)}")
        for key, (expected, minimum) in keys.items():
            name = f"{section}.{key}"
            if key not in values:
                raise UserError(f"missing '{name}' in {PARAMS_FILE}")
            value = values[key]
            types = expected if isinstance(expected, tuple) else (expected,)
            # bool is a subclass of int in Python: `block_size: true` must not pass as 1.
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                type_names = " or ".join(t.__name__ for t in types)
                raise UserError(f"'{name}' must be {type_names}, got {value!r} ({type(value).__name__})")
            if isinstance(value, str) and not value.strip():
                raise UserError(f"'{name}' must not be empty")
            if minimum is not None and not value >= minimum:  # NaN too
                raise UserError(f"'{name}' must be >= {minimum}, got {value}")
    return params


def load_params(section: str, path: Path = PARAMS_FILE) -> dict:
    """Return one validated section of params.yaml (the whole file is validated)."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found; run from the repository root") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    return validate(params)[section]
