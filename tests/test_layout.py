"""The layout shows the architecture (README, "Read the code in this order"): the reading path at
the top, plumbing in lib/ importing nothing above it, the study and the tools below, no import
cycle, every file readable top to bottom."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READING_PATH = {"config.py", "data.py", "masks.py", "model.py", "train.py", "features.py",
                "probe.py", "analyze.py"}
TOP = {p.stem for p in ROOT.glob("*.py")} | {"study", "tools"}
MAX_LINES = 460


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports, as dotted names (lib.cli, model, study.arms, ...)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if (ROOT / (n.replace(".", "/") + ".py")).is_file()}


def sources() -> list[Path]:
    return sorted([*ROOT.glob("*.py"), *ROOT.glob("lib/*.py"), *ROOT.glob("study/*.py"),
                   *ROOT.glob("tools/*.py")])


def test_the_top_level_is_the_reading_path():
    assert {p.name for p in ROOT.glob("*.py")} == READING_PATH
    assert not list((ROOT / "results").rglob("*.py")) and not list((ROOT / "results").rglob("*.sh"))


def test_lib_imports_nothing_from_above_it():
    for path in ROOT.glob("lib/*.py"):
        above = {n for n in project_imports(path) if n.split(".")[0] in TOP}
        assert not above, f"{path.relative_to(ROOT)} imports {sorted(above)}"


def test_there_is_no_import_cycle():
    graph = {str(p.relative_to(ROOT))[:-3].replace("/", "."): project_imports(p)
             for p in sources()}
    done, path = set(), []

    def visit(node):
        assert node not in path, f"import cycle: {' -> '.join(path[path.index(node):] + [node])}"
        if node in done:
            return
        path.append(node)
        for dep in graph.get(node, ()):
            visit(dep)
        path.pop()
        done.add(node)
    for node in graph:
        visit(node)


def test_every_file_reads_top_to_bottom():
    long = {str(p.relative_to(ROOT)): n for p in sources()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"
