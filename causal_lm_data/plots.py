"""`causal-lm-data plots`: the DVC plots rendered to PNG or SVG files, offline.

`dvc plots show` writes an HTML page that loads its chart library from a CDN, so
it is blank offline. `dvc plots show --json` gives, per plot, Vega-Lite specs with
their data inlined; vl-convert (the Vega-Lite library compiled into a Python
wheel, no browser) renders each to an image. Nothing is fetched: a spec naming a
data URL fails instead.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from causal_lm_data.errors import UserError, first_line, printable

PNG_SCALE = 2  # pixels per Vega-Lite unit: a 640-unit-wide chart becomes ~1,700 pixels with its legend


def dvc_plots_json(revisions: list[str]) -> dict:
    """What `dvc plots show --json` (no revisions) or `dvc plots diff REV... --json` prints, parsed."""
    command = ["show"] if not revisions else ["diff", *revisions]
    try:  # this environment's DVC, whatever PATH says
        result = subprocess.run([sys.executable, "-m", "dvc", "plots", *command, "--json"], capture_output=True, text=True)
    except OSError as error:
        raise UserError(f"cannot run dvc: {first_line(error)}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"dvc plots {command[0]} failed: {last}")
    try:
        return json.loads(result.stdout)
    except ValueError as error:
        raise UserError(
            f"dvc plots {command[0]} --json printed no JSON ({first_line(error)}); is this a DVC repository?"
        ) from None


def file_name(plot_id: str, number: int, count: int, suffix: str) -> str:
    """A plot's image file name: its id with anything but letters, digits, '.', '-' and '_' replaced."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", plot_id).strip("._") or "plot"
    return f"{name}{f'-{number}' if count > 1 else ''}.{suffix}"


def render(plot_id: str, spec: dict, image_format: str) -> bytes:
    import vl_convert

    try:
        if image_format == "svg":
            return vl_convert.vegalite_to_svg(spec, allowed_base_urls=[]).encode()
        return vl_convert.vegalite_to_png(spec, scale=PNG_SCALE, allowed_base_urls=[])
    except ValueError as error:
        # "Vega-Lite to PNG conversion failed:", then the JavaScript error, then its stack ("at ...")
        lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.strip().startswith("at ")]
        raise UserError(f"vl-convert could not render plot {plot_id}: {' '.join(lines[:2])}") from None


def images(plots: dict, image_format: str) -> dict[str, bytes]:
    """Every Vega plot of `dvc plots ... --json` output rendered: file name -> image bytes."""
    rendered = {}
    for plot_id, renderers in plots.get("data", {}).items():
        for number, renderer in enumerate(renderers, start=1):
            if renderer.get("type") != "vega":
                # An image plot (a PNG a stage wrote) is a file already: dvc plots show lists it.
                print(
                    f"plots: {printable(plot_id)} is a {printable(str(renderer.get('type')))} plot, not rendered", file=sys.stderr
                )
                continue
            rendered[file_name(plot_id, number, len(renderers), image_format)] = render(
                plot_id, renderer["content"], image_format
            )
    return rendered


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def render_plots(revisions: list[str], out="dvc_plots", image_format: str = "png") -> list[Path]:
    """Render the plots of the workspace (or, given revisions, their diff) into `out`; return the files written.

    Every image is rendered before any is written, and each is written atomically,
    so a failure leaves `out` as it was. A revision DVC could not read a plot at is
    reported (one line each), as `dvc plots` itself does.
    """
    plots = dvc_plots_json(list(revisions))
    for error in plots.get("errors", []):
        what = " of ".join(printable(str(error[key])) for key in ("source", "name") if error.get(key)) or "a plot"
        at = printable(str(error.get("rev", "workspace")))
        print(f"plots: dvc could not read {what} at {at}: {printable(str(error.get('type', 'error')))}", file=sys.stderr)
    rendered = images(plots, image_format)
    if not rendered:
        raise UserError("dvc found no plots here; run this in a DVC repository whose pipeline has run (dvc repro)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in rendered.items():
        write_atomically(out / name, data)
    return [out / name for name in rendered]
