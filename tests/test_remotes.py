"""Sharing through DVC remotes: a local folder, and a real S3 API (moto's server on loopback)."""

import hashlib
import shutil

import boto3

from causal_lm_data.loader import make_dataloader
from tests.helpers import BUCKET, CREDENTIALS, _boto_credentials, files_of, run


def add_remote(repo, url, endpoint=None):
    """Configure the default remote the way the README says, and commit it for the team."""
    run(["dvc", "remote", "add", "-d", "team", url], cwd=repo)
    if endpoint:
        run(["dvc", "remote", "modify", "team", "endpointurl", endpoint], cwd=repo)
    run(["git", "add", ".dvc/config"], cwd=repo)
    run(["git", "commit", "-qm", "add the team's DVC remote"], cwd=repo)


def assert_teammate_gets_everything(repo, tmp_path, **env):
    """git clone + dvc pull: the processed data arrives without running any stage."""
    teammate = tmp_path / "teammate"
    run(["git", "clone", "-q", str(repo), str(teammate)], cwd=tmp_path)
    pulled = run(["dvc", "pull"], cwd=teammate, **env)
    assert "Running stage" not in pulled.stdout
    assert files_of(teammate) == files_of(repo)
    assert "up to date" in run(["dvc", "status"], cwd=teammate, **env).stdout
    assert "are in sync" in run(["dvc", "status", "--cloud"], cwd=teammate, **env).stdout
    batch = next(iter(make_dataloader(teammate / "data" / "grouped")))
    assert batch["input_ids"].shape == (8, 128)
    return teammate


def cache_digest(repo) -> str:
    digest = hashlib.sha256()
    for path in sorted((repo / ".dvc" / "cache").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(repo)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_local_folder_remote_round_trip(repo, tmp_path):
    add_remote(repo, str(tmp_path / "remote"))
    run(["dvc", "push"], cwd=repo)
    assert_teammate_gets_everything(repo, tmp_path)


def test_s3_remote_round_trip(repo, tmp_path, s3):
    add_remote(repo, f"s3://{BUCKET}/cache", endpoint=s3.url)
    run(["dvc", "push"], cwd=repo, **CREDENTIALS)
    stored = boto3.client("s3", endpoint_url=s3.url, **_boto_credentials()).list_objects_v2(Bucket=BUCKET)
    assert stored["KeyCount"] > 0
    assert_teammate_gets_everything(repo, tmp_path, **CREDENTIALS)


def test_push_to_a_down_remote_fails_clearly_and_loses_nothing(repo, tmp_path, s3):
    add_remote(repo, f"s3://{BUCKET}/cache", endpoint=s3.url)
    before = cache_digest(repo)
    s3.stop()
    failed = run(["dvc", "push"], cwd=repo, check=False, **CREDENTIALS)
    assert failed.returncode != 0
    assert "ERROR" in failed.stderr and "Could not connect to the endpoint URL" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert cache_digest(repo) == before

    s3.start()  # back, and empty: moto keeps its objects in memory
    run(["dvc", "push"], cwd=repo, **CREDENTIALS)
    assert_teammate_gets_everything(repo, tmp_path, **CREDENTIALS)


def test_a_corrupted_cache_file_is_repaired_from_the_remote(repo, tmp_path):
    add_remote(repo, str(tmp_path / "remote"))
    run(["dvc", "push"], cwd=repo)
    data = repo / "data" / "grouped" / "data-00000-of-00001.arrow"
    md5 = hashlib.md5(data.read_bytes()).hexdigest()
    cached = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    cached.chmod(0o644)
    cached.write_bytes(b"bit rot" + cached.read_bytes()[7:])

    # Detection: DVC re-hashes a cache file whose mtime changed and disowns it.
    assert "not in cache:       data/grouped" in run(["dvc", "status"], cwd=repo).stdout
    shutil.rmtree(repo / "data" / "grouped")
    assert run(["dvc", "checkout"], cwd=repo, check=False).returncode != 0

    # The recovery documented in the README.
    assert "1 file fetched" in run(["dvc", "pull"], cwd=repo).stdout
    assert hashlib.md5(cached.read_bytes()).hexdigest() == md5
    assert hashlib.md5(data.read_bytes()).hexdigest() == md5
    assert "up to date" in run(["dvc", "status"], cwd=repo).stdout
