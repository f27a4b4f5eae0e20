"""The library's modules import one another in a line, never in a circle: each module imports only
modules below it (imports inside functions counted too), and the read side is the stated line."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "causal_lm_data"
# The read side, bottom to top: the folder format, the plan, one corpus' order, the mixture's,
# the torch boundary, then the names training code imports.
READ_SIDE = ["errors", "format", "plan", "blocks", "mixed", "torch_loader", "mixture", "loader"]
# Folder names that Python's standard .gitignore or packaging tools treat as generated output.
GENERATED = {"build", "dist", "eggs", "sdist", "wheels", "lib", "lib64", "parts", "var", "out", "target", "env", "venv"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every causal_lm_data module `path` imports, wherever in the file (a lazy import is an import)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("causal_lm_data")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {other for other in imports_of(path) if other in modules and other != name} - {"causal_lm_data"}
        for name, path in modules.items()
    }


def test_no_import_circle_in_the_library():
    edges, state, circles = graph(), {}, []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(edges[name]):
            if state.get(other) == "open":
                circles.append(" -> ".join([*trail[trail.index(other) :], other]))
            elif other not in state:
                visit(other, [*trail, other])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not circles, f"import circles: {circles}"


def test_the_read_side_is_one_line():
    edges = graph()
    for position, name in enumerate(READ_SIDE):
        above = {f"causal_lm_data.{other}" for other in READ_SIDE[position + 1 :]}
        assert not edges[f"causal_lm_data.{name}"] & above, (
            f"{name} imports a module above it: {edges[f'causal_lm_data.{name}'] & above}"
        )
    # the read side imports nothing of the write side
    for name in READ_SIDE:
        assert (
            not {other for other in edges[f"causal_lm_data.{name}"] if other.startswith("causal_lm_data.pipeline")}
            or name == "loader"
        )


def test_no_package_folder_has_a_name_tools_ignore():
    folders = [path for path in PACKAGE.rglob("*") if path.is_dir() and path.name != "__pycache__"]
    assert folders and not [path for path in folders if path.name in GENERATED]
