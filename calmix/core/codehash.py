"""Which library code a workflow script runs, as a digest per module: a rule's params, so edits rerun it.

Snakemake tracks a `script:` file's own text but not the modules it imports. Every rule therefore
carries `params: code=library_code(script)`: the calmix modules the script imports, followed
transitively through every import statement in them (also those inside functions), each with a
digest of its syntax tree. An edit that changes what a module does changes its digest, so the
rules importing it, and only those, rerun ("params have changed"); comments, docstrings and
formatting are not in the tree, so editing them reruns nothing.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "calmix"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _module_path(name: str) -> Path | None:
    """The source file of a calmix module, or None when the name is not one (e.g. an attribute)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(tree: ast.AST) -> set[str]:
    """Every absolute module name an import statement anywhere in the tree could load."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from calmix import plots`
    return names


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@cache
def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


def text_digest(text: str) -> str:
    """sha256, 16 hex digits: short enough to read in a param, long enough never to collide here."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@cache
def module_digest(path: Path) -> str:
    """Digest of a module's syntax tree without docstrings: what the code does."""
    return text_digest(ast.dump(_without_docstrings(ast.parse(path.read_text(), filename=str(path)))))


def library_modules(script: str | Path) -> list[str]:
    """The calmix modules a script imports, directly or through other calmix modules, sorted."""
    seen: dict[str, Path] = {}
    todo = sorted(_imported_names(_parse(Path(script).resolve())))
    while todo:
        name = todo.pop()
        path = _module_path(name)
        if path is None or name in seen:
            continue
        seen[name] = path
        parent = name.rpartition(".")[0]
        todo += [parent] if parent else []  # importing calmix.x runs calmix/__init__.py
        todo += sorted(_imported_names(_parse(path)))
    return sorted(seen)


def library_code(script: str | Path) -> dict[str, str]:
    """{module: digest} for every calmix module the script runs: the rule param that follows the code."""
    return {name: module_digest(_module_path(name)) for name in library_modules(script)}
