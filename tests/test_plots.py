"""`causal-lm-data plots`: DVC's plots of a real built repository rendered to PNG and SVG offline."""

import json
import re
import struct
import sys

from tests.helpers import REPO, run

PLOTS = [sys.executable, "-m", "causal_lm_data", "plots"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def texts(svg: str) -> list[str]:
    """The text elements of an SVG: titles, axis labels, tick labels, legend entries."""
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_both_plots_render_to_png_without_touching_the_repository(built_repo, tmp_path):
    before = run(["git", "status", "--porcelain"], cwd=built_repo).stdout
    result = run([*PLOTS, "--out", str(tmp_path / "images")], cwd=built_repo)
    assert result.stdout.split() == [
        str(tmp_path / "images" / name) for name in ("document_lengths.png", "mixture_shares.png", "tokens_kept.png")
    ]
    for path in result.stdout.split():
        data = open(path, "rb").read()
        width, height = png_size(data)
        assert 1000 <= width <= 4000 and 500 <= height <= 2000 and len(data) > 50_000, (path, width, height, len(data))
    assert run(["git", "status", "--porcelain"], cwd=built_repo).stdout == before


def test_svg_has_titles_axis_labels_and_a_log_count_axis_that_draws_zero(built_repo, tmp_path):
    run([*PLOTS, "--out", str(tmp_path), "--format", "svg"], cwd=built_repo)
    lengths = (tmp_path / "document_lengths.svg").read_text()
    labels = texts(lengths)
    assert "Document length in tokens (training split), before and after truncation at tokenize.max_length" in labels
    assert "documents (log scale)" in labels
    assert any(label.startswith("document length (tokens;") for label in labels)
    # A log axis that still draws 0 (symlog): ticks at 0 and the decades, not a linear axis's 500, 1,000, 1,500...
    y_axis = lengths[lengths.index("Y-axis titled 'documents (log scale)' for a symlog scale") :]
    assert texts(y_axis)[:6] == ["0", "1", "10", "100", "1,000", "documents (log scale)"]
    # Bins holding no document (every one past max_length after truncation) are drawn, at 0; nothing is NaN or infinite.
    assert "field: documents_after_truncation; tokens: 1024; dvc_inferred_y_value: 0" in lengths
    assert "NaN" not in lengths and "Infinity" not in lengths
    kept = texts((tmp_path / "tokens_kept.svg").read_text())
    assert {"Tokens kept by each step (training split)", "tokenized", "kept after truncation", "kept in blocks"} <= set(kept)


def test_revisions_render_their_diff(repo, tmp_path):
    run(["dvc", "exp", "run", "-n", "short", "-S", "tokenize.max_length=256"], cwd=repo)
    # Two revisions: the baseline and the experiment; one revision: it against the workspace (the experiment's outputs).
    for revisions, legend in ((["HEAD", "short"], ["HEAD", "short"]), (["HEAD"], ["workspace", "HEAD"])):
        out = tmp_path / "-".join(revisions)
        printed = run([*PLOTS, *revisions, "--out", str(out), "--format", "svg"], cwd=repo).stdout.split()
        assert printed == [str(out / "document_lengths.svg"), str(out / "mixture_shares.svg"), str(out / "tokens_kept.svg")]
        svg = (out / "document_lengths.svg").read_text()
        assert f"Symbol legend titled 'rev' for fill color and stroke color with 2 values: {', '.join(legend)}" in svg
        assert all(f"rev: {rev}; field: documents_after_truncation" in svg for rev in legend)  # both drawn
    run([*PLOTS, "HEAD", "short", "--out", str(tmp_path / "png")], cwd=repo)
    assert png_size((tmp_path / "png" / "document_lengths.png").read_bytes())[0] > 1000


def test_a_plot_that_would_fetch_data_fails_in_one_line_and_writes_nothing(repo, tmp_path):
    """vl-convert is given no base URL: a template naming a data URL fails instead of going online."""
    template = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": "<DVC_METRIC_DATA>"},
        "layer": [
            {"mark": "line", "encoding": {"x": {"field": "<DVC_METRIC_X>"}, "y": {"field": "<DVC_METRIC_Y>"}}},
            {"data": {"url": "https://example.com/counts.csv"}, "mark": "point"},
        ],
    }
    (repo / ".dvc" / "plots" / "log_counts.json").write_text(json.dumps(template))
    out = tmp_path / "images"
    out.mkdir()
    (out / "document_lengths.png").write_bytes(b"an older image")
    result = run([*PLOTS, "--out", str(out)], cwd=repo, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert (
        result.stderr.startswith("error: vl-convert could not render plot document_lengths: ") and result.stderr.count("\n") == 1
    )
    assert "failed: Error: External data url not allowed: https://example.com/counts.csv\n" in result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["document_lengths.png"]
    assert (out / "document_lengths.png").read_bytes() == b"an older image"


def test_mistakes_are_one_line(built_repo, tmp_path):
    unknown = run([*PLOTS, "no-such-revision", "--out", str(tmp_path)], cwd=built_repo, check=False)
    outside = run([*PLOTS, "--out", str(tmp_path / "out")], cwd=tmp_path, check=False, PYTHONPATH=str(REPO))
    assert unknown.stderr == "error: dvc plots diff failed: ERROR: unknown Git revision 'no-such-revision'\n"
    # Outside a repository, dvc plots show --json prints {} and exits 0
    assert outside.stderr == "error: dvc found no plots here; run this in a DVC repository whose pipeline has run (dvc repro)\n"
    for result in (unknown, outside):
        assert result.returncode == 1 and result.stdout == "" and result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
