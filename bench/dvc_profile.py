"""Where DVC's own time goes in `dvc repro` and `dvc exp run` of this pipeline.

    python bench/dvc_profile.py                            # default pipeline (built-in corpus), ~1 min
    python bench/dvc_profile.py --documents 250000         # bench/scale.py's corpus, ~3 min, ~2 GB
    python bench/dvc_profile.py --config core.checksum_jobs=2 --repeats 3

Each repeat clones HEAD into a temporary folder (a new DVC state database, as a fresh
clone has), runs `dvc repro` from scratch, then `dvc exp run -S <--experiment>`. Timers
are put around DVC's own functions by a sitecustomize module on PYTHONPATH that acts
only in the `dvc` process (DVC 3.x function names; a name that is missing is skipped),
so the stage commands run as usual. Prints, per phase, the median wall seconds, and the
bytes DVC hashed with md5; `--config` settings go to .dvc/config.local before the runs.
Offline.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.benchmark import clone, measure, set_param  # noqa: E402

# Phases, each the inclusive time of the DVC functions named (outermost call only).
PHASES = [
    ("stage commands", "dvc.stage.run", "_run"),
    ("status checks (deps and outs changed?)", "dvc.stage:Stage", "changed"),
    ("hash deps", "dvc.stage:Stage", "save_deps"),
    ("hash outs", "dvc.stage:Stage", "save_outs"),
    ("run-cache lookup", "dvc.stage.cache:StageCache", "restore"),
    ("run-cache save", "dvc.stage.cache:StageCache", "save"),
    ("cache commit (link outs into .dvc/cache)", "dvc.stage:Stage", "commit"),
    ("dvc.lock writes", "dvc.stage:Stage", "dump"),
    ("index builds (dvc.yaml, dvc.lock, params)", "dvc.repo.index:Index", "from_repo"),
    ("exp: commit deps before the run", "dvc.repo.experiments.queue.base:BaseStashQueue", "_stash_commit_deps"),
    ("exp: checkout before the run", "dvc.repo.checkout", "checkout"),
    ("exp: git add of each stage's files", "dvc.repo.scm_context:SCMContext", "add"),
    ("exp: experiment commit", "dvc.repo.experiments.executor.base:BaseExecutor", "_repro_commit"),
    ("reproduce, in all", "dvc.repo:Repo", "reproduce"),
    ("command, in all", "dvc.cli", "main"),
]

SITECUSTOMIZE = """
import os, sys, time
_T0 = time.perf_counter()
_LOG = os.environ.get("DVC_PROFILE_LOG")
if _LOG and sys.argv and os.path.basename(sys.argv[0]) == "dvc":
    import atexit, functools, importlib, json, threading
    totals, active, lock = {"md5_bytes": 0, "md5_files": 0}, set(), threading.Lock()

    def wrap(name, module, attr):
        module, _, cls = module.partition(":")
        try:
            owner = importlib.import_module(module)
            owner = getattr(owner, cls) if cls else owner
            raw = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        except (ImportError, AttributeError, KeyError):
            return
        kind = type(raw) if isinstance(raw, (classmethod, staticmethod)) else None
        inner = raw.__func__ if kind else raw

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            if name in active:
                return inner(*args, **kwargs)
            active.add(name)
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                active.discard(name)
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

        setattr(owner, attr, kind(timed) if kind else timed)

    for name, module, attr in json.loads(os.environ["DVC_PROFILE_PHASES"]):
        wrap(name, module, attr)
    try:
        import dvc_data.hashfile.hash as hashing

        file_md5 = hashing.file_md5

        def counted_md5(path, *args, **kwargs):
            value = file_md5(path, *args, **kwargs)
            with lock:
                totals["md5_files"] += 1
                totals["md5_bytes"] += os.path.getsize(path) if os.path.exists(path) else 0
            return value

        hashing.file_md5 = counted_md5
    except ImportError:
        pass

    def dump():
        times = os.times()
        totals["process"] = time.perf_counter() - _T0
        totals["dvc_cpu"] = times.user + times.system
        with open(_LOG, "a") as log:
            log.write(json.dumps(totals) + "\\n")

    atexit.register(dump)
"""


def profiled(args: list[str], repo: Path, site: Path) -> dict:
    """Run one dvc command with the timers; its wall seconds and per-phase totals."""
    log = site / "log.jsonl"
    log.unlink(missing_ok=True)
    phases = json.dumps([[name, module, attr] for name, module, attr in PHASES])
    seconds, rss, _ = measure(args, repo, PYTHONPATH=f"{site}:{repo}", DVC_PROFILE_LOG=str(log), DVC_PROFILE_PHASES=phases)
    return {"wall": seconds, "rss_mib": rss, **json.loads(log.read_text().splitlines()[-1])}


def one_repeat(work: Path, corpus: Path | None, experiment: list[str], config: list[str]) -> dict:
    site = work / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    if corpus:
        repo = clone(work / "repo", corpus)
        set_param(repo, "tokenize.truncation", False)
        set_param(repo, "tokenize.add_eos", True)
        subprocess.run(["git", "commit", "-qam", "scale params"], cwd=repo, check=True)
    else:
        repo = work / "repo"
        subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    for setting in config:
        key, value = setting.split("=", 1)
        subprocess.run(["dvc", "config", "--local", key, value], cwd=repo, check=True)
    result = {"repro": profiled(["dvc", "repro"], repo, site)}
    result["noop"] = profiled(["dvc", "repro"], repo, site)
    result["exp"] = profiled(["dvc", "exp", "run", *(f"-S{value}" for value in experiment)], repo, site)
    return result


def report(runs: list[dict], title: str) -> str:
    def median(command, key):
        return statistics.median(run[command].get(key, 0.0) for run in runs)

    commands = ("repro", "noop", "exp")
    lines = [title, "", "| phase (median s) | `dvc repro`, fresh clone | no-op `dvc repro` | `dvc exp run` |"]
    lines.append("| --- | ---: | ---: | ---: |")
    rows = [("whole command, wall", "wall")] + [(name, name) for name, _, _ in PHASES]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(f"{median(c, key):.2f}" for c in commands) + " |")
    own = [statistics.median(run[c]["wall"] - run[c].get("stage commands", 0.0) for run in runs) for c in commands]
    lines.append("| DVC's own time: wall less stage commands | " + " | ".join(f"{v:.2f}" for v in own) + " |")
    lines.append("| DVC process CPU (user + system) | " + " | ".join(f"{median(c, 'dvc_cpu'):.2f}" for c in commands) + " |")
    lines.append(
        "| md5 hashed by DVC (MB, files) | "
        + " | ".join(f"{median(c, 'md5_bytes') / 1e6:,.0f}, {median(c, 'md5_files'):.0f}" for c in commands)
        + " |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=0, help="0: the built-in corpus with default params")
    parser.add_argument("--experiment", action="append", help="a -S value (default tokenize.max_length=256)")
    parser.add_argument("--config", action="append", default=[], help="KEY=VALUE for dvc config --local")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    experiment = args.experiment or ["tokenize.max_length=256"]
    runs = []
    with tempfile.TemporaryDirectory() as corpus_dir:
        corpus = None
        if args.documents:
            from bench.scale import natural_corpus

            corpus = natural_corpus(Path(corpus_dir) / "corpus.parquet", args.documents)
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as work:
                runs.append(one_repeat(Path(work), corpus, experiment, args.config))
    corpus_name = f"{args.documents:,} natural documents" if args.documents else "the built-in corpus"
    title = (
        f"{corpus_name}; experiment -S {' -S '.join(experiment)}; config {', '.join(args.config) or 'as committed'};"
        f" median of {args.repeats}"
    )
    print(report(runs, title))


if __name__ == "__main__":
    main()
