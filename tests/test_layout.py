"""The package's layering (docs/README.md): a module imports only its own folder and lower layers,
and no import cycle exists."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "PromptIQA"
# folder -> the folders it may import besides itself
ALLOWED = {
    "utils": set(),
    "models": {"utils"},
    "data": {"utils"},
    "evaluation": {"utils", "models", "data"},
    "scoring": {"utils", "models", "data"},
    "training": {"utils", "models", "data", "evaluation"},
    "app": {"utils", "models", "data", "scoring"},
    "export": {"utils", "models", "data", "scoring"},
    "commands": {"utils", "models", "data", "evaluation", "scoring", "training", "app", "export"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path) -> set[str]:
    """Absolute names of the PromptIQA modules that `path` imports (at any depth of its code)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "PromptIQA":
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "PromptIQA")
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def folder_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if folder_of(m)))
def test_imports_only_lower_layers(module):
    own = folder_of(module)
    for target in package_imports(MODULES[module]):
        other = folder_of(target)
        if other and other != own:
            assert other in ALLOWED[own], f"{module} imports {target}: {own}/ may not import {other}/"


def test_every_folder_is_mapped():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(ALLOWED)


def test_no_import_cycle():
    graph = {m: {t for t in package_imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # a package's __init__ is imported with any of its modules; that edge is no cycle of the code
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_score_command_does_not_import_training():
    assert not any(folder_of(t) == "training" for t in package_imports(MODULES["PromptIQA.commands.score"]))
