"""Which library code a workflow script runs, as a digest per module: a rule's params, so edits rerun it.

Snakemake tracks a `script:` file's own text but not the modules it imports. Every rule therefore
carries `params: code=library_code(script)`: the calmix modules the script imports, followed
transitively through every import statement in them (also those inside functions), each with a
digest of its syntax tree. An edit that changes what a module does changes its digest, so the
rules importing it, and only those, rerun ("params have changed"); comments, docstrings, type
annotations and formatting are not in the tree, so editing them reruns nothing.

Code a job loads by name rather than by an import statement (a pruning method's kernel, a source
kind's reader) is named by the rule: ``library_code(script, modules)``. That is how a prune job
digests only its own method, and a corpus job only its own kind of source.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "calmix"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

#: Modules that declare types and nothing else (the records of every manifest): no job runs their
#: code, so editing a field's type reruns nothing.
TYPES_ONLY = {"calmix.core.records"}


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


class _Behaviour(ast.NodeTransformer):
    """A syntax tree less what does not change what the code does: docstrings and type annotations
    (an annotated assignment stays an assignment)."""

    def _body(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    def visit_Module(self, node):
        return self._body(self.generic_visit(node))

    def visit_ClassDef(self, node):
        return self._body(self.generic_visit(node))

    def visit_FunctionDef(self, node):
        node.returns = None
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs, node.args.vararg, node.args.kwarg]:
            if arg is not None:
                arg.annotation = None
        return self._body(self.generic_visit(node))

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node):
        if node.value is None:
            return None
        return ast.copy_location(ast.Assign(targets=[node.target], value=self.visit(node.value)), node)


@cache
def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


def text_digest(text: str) -> str:
    """sha256, 16 hex digits: short enough to read in a param, long enough never to collide here."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@cache
def module_digest(path: Path) -> str:
    """Digest of a module's syntax tree without docstrings and annotations: what the code does."""
    return text_digest(ast.dump(_Behaviour().visit(ast.parse(path.read_text(), filename=str(path)))))


def library_modules(script: str | Path, modules: Iterable[str] = ()) -> list[str]:
    """The calmix modules a script imports, directly or through other calmix modules, plus ``modules``
    (loaded by name at run time, e.g. a pruning method's kernel) and what those import; sorted."""
    seen: dict[str, Path] = {}
    todo = sorted(_imported_names(_parse(Path(script).resolve())) | set(modules))
    while todo:
        name = todo.pop()
        path = _module_path(name)
        if path is None or name in seen or name in TYPES_ONLY:
            continue
        seen[name] = path
        parent = name.rpartition(".")[0]
        todo += [parent] if parent else []  # importing calmix.x runs calmix/__init__.py
        todo += sorted(_imported_names(_parse(path)))
    return sorted(seen)


def library_code(script: str | Path, modules: Iterable[str] = ()) -> dict[str, str]:
    """{module: digest} for every calmix module the script runs: the rule param that follows the code."""
    return {name: module_digest(_module_path(name)) for name in library_modules(script, modules)}
