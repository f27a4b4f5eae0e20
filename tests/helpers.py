"""Helpers the tests share: running the pipeline's commands, writing small inputs and folders, a local S3 server."""

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from causal_lm_data.format import read_table, shard_name
from causal_lm_data.pipeline.command import stage_command as dvc_stage_command
from causal_lm_data.pipeline.writer import write_index, write_shard

# No machine running the tests reaches the Hugging Face Hub: fail at once instead of retrying.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
# dvc, python and pytest of the environment running the tests, whatever PATH says.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(args, cwd, check=True, input_text=None, timeout=None, **env) -> subprocess.CompletedProcess:
    """Run a command in `cwd`, returning its output; fail the test with its stderr if check."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env={**ENV, "PYTHONPATH": str(cwd), **env},
        capture_output=True,
        text=True,
        input=input_text,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def stage_command(stage: str, workdir) -> list[str]:
    """The command of `stage` as this repository's dvc.yaml writes it, ${params} from workdir's params.yaml."""
    return dvc_stage_command(REPO / "dvc.yaml", stage, Path(workdir) / "params.yaml")


def clone_repo(destination: Path) -> Path:
    """A git clone of this repository carrying the working tree (tracked and new files), committed.

    In CI the working tree is a clean clone, so this is exactly `git clone`.
    """
    run(["git", "clone", "-q", str(REPO), str(destination)], cwd=REPO)
    tracked = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout.split("\0")
    for name in filter(None, tracked):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    # dvc exp run commits too: give the clone an identity even where git has none configured.
    run(["git", "config", "user.name", "test"], cwd=destination)
    run(["git", "config", "user.email", "test@example.com"], cwd=destination)
    run(["git", "add", "-A"], cwd=destination)
    run(["git", "commit", "-qm", "working tree", "--allow-empty"], cwd=destination)
    return destination


DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(workdir, **changes) -> None:
    """params.yaml in workdir: the defaults with `section__key=value` changes."""
    params = {section: dict(values) for section, values in DEFAULTS.items()}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params[section][key] = value
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def stage_in(workdir, stage, **changes):
    """Run one stage's command (as dvc.yaml writes it) in workdir, with params.yaml changed as given.

    tokenize reads what clean writes: when workdir holds a data/raw newer than its data/clean,
    clean runs first (with the default params it links data/raw's files into data/clean), so
    a test that downloads then tokenizes reads what it downloaded.
    """
    write_params(workdir, **changes)
    raw, cleaned = Path(workdir) / "data" / "raw", Path(workdir) / "data" / "clean"
    if stage == "tokenize" and raw.exists() and (not cleaned.exists() or cleaned.stat().st_mtime_ns < raw.stat().st_mtime_ns):
        result = run(stage_command("clean", workdir), cwd=workdir, check=False, PYTHONPATH=str(REPO))
        if result.returncode != 0:
            return result
    command = stage_command(stage, workdir)
    if stage == "mix":  # each corpus of the recipe, as dvc.yaml names it (README: a recipe)
        corpora = yaml.safe_load((Path(workdir) / "params.yaml").read_text()).get("corpora") or {}
        command += [f"--corpus={name}=data/corpora/{name}/grouped" for name in corpora]
    return run(command, cwd=workdir, check=False, PYTHONPATH=str(REPO))


def assert_clean_failure(result, workdir, output, message):
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert not (workdir / output).exists()
    assert not list((workdir / "data").glob(".*partial*")) if (workdir / "data").exists() else True


OUTPUTS = ["data/raw", "data/tokenized", "data/grouped"]


def files_of(repo):
    return {
        str(path.relative_to(repo)): path.read_bytes()
        for folder in OUTPUTS + ["metrics"]
        for path in sorted((repo / folder).rglob("*"))
        if path.is_file()
    }


def metrics(repo, stage):
    return json.loads((repo / "metrics" / f"{stage}.json").read_text())


def write_imdb_like_repo(root, texts):
    """A folder laid out like the Hub's IMDB dataset repository."""
    (root / "plain_text").mkdir(parents=True)
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: plain_text\n  data_files:\n"
        "  - split: train\n    path: plain_text/train-*\n  - split: test\n    path: plain_text/test-*\n---\n"
    )
    labels = [i % 2 for i in range(len(texts))]
    pq.write_table(pa.table({"text": texts, "label": labels}), root / "plain_text" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": ["test review"], "label": [0]}), root / "plain_text" / "test-00000-of-00001.parquet")
    return root


def write_tokenized(folder, documents, shard_sizes, batch_rows):
    """A data/tokenized-like folder: `documents` in shards of `shard_sizes` documents, record batches of `batch_rows`."""
    folder.mkdir(parents=True)
    schema = pa.schema([("input_ids", pa.list_(pa.uint16()))])
    bounds = np.cumsum([0, *shard_sizes])
    files = []
    for index, (low, high) in enumerate(zip(bounds[:-1], bounds[1:])):
        batches = [
            pa.record_batch([pa.array(documents[i : min(i + batch_rows, high)], pa.list_(pa.uint16()))], schema=schema)
            for i in range(low, high, batch_rows)
        ]
        name = shard_name(index, len(shard_sizes))
        rows, sha256 = write_shard(folder / name, schema, batches)
        files.append((name, sha256, rows))
    write_index(folder, schema, files)


def local(path):
    return {"download__dataset": "local", "download__local_path": str(path)}


def block_ids(loader, batches) -> list[list[int]]:
    """The first `batches` batches of `loader`, across epochs, as lists of block numbers (each block's first 4 ids)."""
    seen = []
    while len(seen) < batches:
        for batch in loader:
            seen.append([tuple(row[:4]) for row in batch["input_ids"].tolist()])
            if len(seen) == batches:
                break
    return seen


def write_tokens(folder, documents, id_type=None, shard_sizes=None):
    """A data/tokenized-like folder of `documents` (lists of ids, uint16 by default) in shards of `shard_sizes` documents."""
    folder.mkdir(parents=True)
    id_type = id_type or pa.uint16()
    schema = pa.schema([("input_ids", pa.list_(id_type))])
    bounds = np.cumsum([0, *(shard_sizes or [len(documents)])])
    files = []
    for index, (low, high) in enumerate(itertools.pairwise(bounds)):
        name = shard_name(index, len(bounds) - 1)
        batch = pa.record_batch([pa.array(documents[low:high], pa.list_(id_type))], schema=schema)
        rows, sha256 = write_shard(folder / name, schema, [batch])
        files.append((name, sha256, rows))
    write_index(folder, schema, files)


def documents(first_id=0, count=40):
    return [list(range(first_id + i, first_id + i + 20)) for i in range(count)]


def set_download_params(repo, **values):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["download"].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage_error(repo, **values):
    set_download_params(repo, **values)
    result = run(stage_command("download", repo), cwd=repo, check=False)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


BUCKET = "team-lm-data"


class MotoServer:
    """moto's standalone S3 server on a loopback port; state lives in its memory."""

    def __init__(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        executable = Path(sys.executable).parent / "moto_server"
        self.process = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto_server did not start")
        boto3.client("s3", endpoint_url=self.url, **_boto_credentials()).create_bucket(Bucket=BUCKET)

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def _boto_credentials():
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@pytest.fixture
def s3():
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def raw_texts(workdir):
    return read_table(workdir / "data" / "raw", "download").column("text").to_pylist()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def dask_cluster(workdir: Path, pythonpath: Path, workers: int = 2):
    """A real Dask scheduler and `workers` worker processes, all on 127.0.0.1."""
    port, dashboard = free_port(), free_port()
    env = {**ENV, "PYTHONPATH": str(pythonpath), "TMPDIR": str(workdir)}
    binaries = Path(sys.executable).parent
    processes = [
        subprocess.Popen(
            [
                binaries / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                f"127.0.0.1:{dashboard}",
                "--no-show",
            ],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    address = f"tcp://127.0.0.1:{port}"
    for _ in range(workers):
        processes.append(
            subprocess.Popen(
                [
                    binaries / "dask",
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--dashboard-address",
                    "127.0.0.1:0",
                    "--local-directory",
                    str(workdir / "dask-worker"),
                ],
                cwd=workdir,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)
            assert len(client.scheduler_info()["workers"]) == workers
        yield address
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def assert_engine_exact(encoder, reference, documents):
    ids, lengths = encoder.encode(documents)
    expected = reference(documents, add_special_tokens=False)["input_ids"]
    pieces = np.split(ids.astype(np.int64), np.cumsum(lengths)[:-1])
    mismatched = [i for i, (a, e) in enumerate(zip(pieces, expected)) if a.tolist() != e]
    assert len(pieces) == len(expected) and mismatched == [], (
        f"{len(mismatched)} differ, first: {documents[mismatched[0]][:80]!r}"
    )


def write_three_corpora(root: Path) -> Path:
    """Three grouped folders of 16-token blocks (61, 23 and 7 blocks; corpus k's ids in [1000k, 1000k + 1000))
    and a plan over them with weights 2:1:1, as the mix stage writes it; returns the plan's path."""
    from causal_lm_data.pipeline.grouped import group_split
    from causal_lm_data.plan import plan_mixture

    rng = np.random.default_rng(0)
    sources = []
    for number, (name, count) in enumerate((("web", 100), ("code", 40), ("books", 12))):
        texts = [(rng.integers(0, 1000, size=rng.integers(1, 21)) + 1000 * number).tolist() for _ in range(count)]
        write_tokenized(root / name / "tokenized", texts, [count], batch_rows=7)
        counts = group_split(root / name / "tokenized", root / name / "grouped", 16)
        sources.append({"name": name, "folder": f"{name}/grouped", "blocks": counts["blocks"]})
    plan, _ = plan_mixture({s["name"]: s["blocks"] for s in sources}, {"web": 2, "code": 1, "books": 1}, max_repetition=10)
    for source, quota in zip(sources, plan.quotas):
        source["blocks_per_epoch"] = quota
    (root / "mix.json").write_text(json.dumps({"sources": sources}))
    return root / "mix.json"


def add_to_mix(repo, *names) -> None:
    """Name each corpus in the mix stage of repo's dvc.yaml, cmd and deps, as README.md tells a user to."""
    path = Path(repo) / "dvc.yaml"
    text = path.read_text()
    cmd, deps = "--main data/grouped", "    deps:\n      - data/grouped\n"
    for name in names:
        folder = f"data/corpora/{name}/grouped"
        text = text.replace(cmd, f"{cmd} --corpus {name}={folder}", 1).replace(deps, f"{deps}      - {folder}\n", 1)
    path.write_text(text)
