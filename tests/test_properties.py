"""Property-based bad input: every outcome is correct output or one clean error line."""

import contextlib
import copy
import io
import os
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from causal_lm_data.errors import UserError
from causal_lm_data.format import read_table
from causal_lm_data.pipeline.command import run_stage
from causal_lm_data.pipeline.params import MAY_BE_EMPTY, SCHEMA, validate
from causal_lm_data.tokenizer import load_tokenizer
from stages import clean, download, group, tokenize
from tests.helpers import REPO, stage_command

DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
KEYS = [(section, key) for section, keys in SCHEMA.items() for key in keys]


def acceptable(name, value, expected, minimum, maximum) -> bool:
    """The plain rule the validator must implement."""
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        return False
    if isinstance(value, str) and not value.strip() and name not in MAY_BE_EMPTY:
        return False
    if isinstance(value, list) and not all(isinstance(item, str) and item.strip() for item in value):
        return False
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(KEYS), ANY_VALUE, max_size=3), unknown=st.booleans())
def test_params_are_accepted_exactly_when_valid(changes, unknown):
    params = copy.deepcopy(DEFAULTS)
    for (section, key), value in changes.items():
        params[section][key] = value
    if unknown:
        params["group"]["blocksize"] = 128  # a typo
    valid = not unknown and all(acceptable(f"{s}.{k}", v, *SCHEMA[s][k]) for (s, k), v in changes.items())
    if valid:
        assert validate(params) == params
    else:
        with pytest.raises(UserError) as error:
            validate(params)
        assert "\n" not in str(error.value)


CHARACTERS = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=("Cs",))
DOCUMENT = st.one_of(
    st.none(),
    st.just(""),
    st.text(CHARACTERS, max_size=30),  # every plane, control characters included
    st.sampled_from(["a", " ", "\n", ".", "<|endoftext|>", "\x00"]),  # one token or less
    st.builds(lambda text, times: text * times, st.text(CHARACTERS, min_size=1, max_size=8), st.integers(50, 400)),
)


@pytest.fixture(scope="module")
def reference_tokenizer():
    return load_tokenizer("distilgpt2")


def run_in(folder: Path, stage) -> str | None:
    """Run a stage's main in `folder`; return its error line, or None when it succeeded."""
    stderr = io.StringIO()
    previous, arguments = os.getcwd(), sys.argv
    os.chdir(folder)
    # The command line dvc.yaml gives the stage (python -m stages.NAME ...).
    sys.argv = [stage.__name__, *stage_command(stage.__name__.split(".")[-1], folder)[3:]]
    try:
        with contextlib.redirect_stderr(stderr):
            run_stage(stage.main)
        return None
    except SystemExit as exit:
        assert exit.code == 1
        return stderr.getvalue()
    finally:
        os.chdir(previous)
        sys.argv = arguments


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(documents=st.lists(DOCUMENT, max_size=12), block_size=st.integers(1, 64), max_length=st.integers(1, 600))
def test_any_corpus_gives_reference_blocks_or_one_error_line(reference_tokenizer, documents, block_size, max_length):
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        params = copy.deepcopy(DEFAULTS)
        params["download"].update(dataset="local", local_path=str(work / "corpus.parquet"))
        params["tokenize"]["max_length"] = max_length
        params["group"]["block_size"] = block_size
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        pq.write_table(pa.table({"text": pa.array(documents, pa.string())}), work / "corpus.parquet")

        texts = [d for d in documents if d]
        stream = [t for text in texts for t in reference_tokenizer(text)["input_ids"][:max_length]]
        usable = len(stream) // block_size * block_size
        expected = [stream[i : i + block_size] for i in range(0, usable, block_size)]

        errors = {stage.__name__: run_in(work, stage) for stage in (download, clean, tokenize, group)}
        event("blocks" if expected and None not in documents else "an error")
        if None in documents:
            assert "missing (null) documents" in errors["stages.download"]
        elif not texts:
            assert "no non-empty documents" in errors["stages.download"]
        elif not expected:
            assert errors["stages.download"] is None and errors["stages.clean"] is None and errors["stages.tokenize"] is None
            assert "fewer than one block" in errors["stages.group"]
        else:
            assert set(errors.values()) == {None}, errors
            blocks = read_table(work / "data" / "grouped", "group").column("input_ids").to_pylist()
            assert blocks == expected
            return
        failed = next(error for error in errors.values() if error is not None)
        assert failed.startswith("error: ") and failed.count("\n") == 1, failed
        outputs = {"stages.download": "raw", "stages.clean": "clean", "stages.tokenize": "tokenized", "stages.group": "grouped"}
        failed_stage = next(name for name, error in errors.items() if error is not None)
        assert not (work / "data" / outputs[failed_stage]).exists()
        assert [p.name for p in (work / "data").iterdir() if "partial" in p.name] == []
