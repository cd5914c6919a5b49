"""The import layering of ARCHITECTURE.md, enforced on every test run."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "src" / "corral"
ALLOWED = {
    "model": set(),
    "config": set(),  # the settings machinery: below everything that has settings
    "protocol": {"model"},
    "store": {"model"},
    "scheduler": {"model"},
    "sdk": {"protocol", "model"},
    "server": {"model", "store", "scheduler", "protocol", "config"},
    "worker": {"model", "protocol", "sdk", "config"},
    "client": {"model", "protocol", "config"},
    "local": {"model", "protocol", "store", "server", "worker", "client", "sdk", "config"},
}
IO_MODULES = {"sqlalchemy", "httpx", "fastapi", "starlette", "uvicorn", "asyncpg", "psycopg",
              "aiosqlite", "requests", "socket", "subprocess"}  # fmt: skip
PURE = {"model", "scheduler"}


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def test_layers_hold():
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        me = f.relative_to(PKG).parts[0].removesuffix(".py")
        for line, mod in _imports(ast.parse(f.read_text(encoding="utf-8"))):
            parts = mod.split(".")
            where = f"{f.relative_to(PKG)}:{line}"
            if parts[0] == "corral" and len(parts) > 1:
                other = parts[1]
                if other == "cli" and me != "cli":  # nothing imports the CLI
                    bad.append(f"{where}: imports corral.cli")
                elif me in ALLOWED and other in ALLOWED and other not in ALLOWED[me] | {me}:
                    bad.append(f"{where}: {me} imports {other}")
            elif me in PURE and parts[0] in IO_MODULES:
                bad.append(f"{where}: pure {me} imports {parts[0]}")
    assert not bad, "\n".join(bad)
