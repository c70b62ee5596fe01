"""The engine's boundary: `gpu_worker` imports nothing of ours, of Prefect, AWS, a database or chat.

Two checks, since each misses what the other sees: every module of `gpu_worker` is imported in a
fresh interpreter and the modules that import loaded are read from `sys.modules` (this catches a
forbidden package pulled in through a third one), and every `import` statement in the package's
source, including those inside functions, is read from its syntax tree (this catches imports
that run only when a function is called).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "gpu_worker"

FORBIDDEN = (
    "flows",
    "bots",
    "prefect",
    "boto3",
    "botocore",
    "sqlalchemy",
    "alembic",
    "telegram",
    "discord",
    "httpx",
    "aiohttp",
)
"""Top-level packages `gpu_worker` must never import: ours, the orchestrator, AWS, the database
and its migrations, the chat libraries and the HTTP clients the chat clients are built on."""


def _modules() -> list[str]:
    names = []
    for path in sorted(ENGINE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _forbidden(name: str) -> bool:
    return name.split(".", 1)[0] in FORBIDDEN


def forbidden_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a forbidden package in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _forbidden(node.module):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            arg = node.args[0] if node.args else None
            if (
                isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and _forbidden(arg.value)
            ):
                found.append((node.lineno, arg.value))
    return found


_PROBE = (
    "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
    "print(json.dumps(sorted(sys.modules)))"
)


def _loaded_by(module: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
        env=env,
    )
    assert out.returncode == 0, f"importing {module} failed:\n{out.stderr[-2000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_scan_sees_every_kind_of_import():
    source = (
        "import os\n"
        "import prefect\n"
        "from flows.settings import get_settings\n"
        "def f():\n"
        "    import boto3.session\n"
        "    from sqlalchemy import select\n"
        "    importlib.import_module('telegram')\n"
        "from . import audio\n"
        "import discordant\n"
    )
    assert forbidden_imports(source) == [
        (2, "prefect"),
        (3, "flows.settings"),
        (5, "boto3.session"),
        (6, "sqlalchemy"),
        (7, "telegram"),
    ]


def test_no_engine_source_imports_a_forbidden_package():
    found = {}
    for path in sorted(ENGINE.rglob("*.py")):
        hits = forbidden_imports(path.read_text(encoding="utf-8"))
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert found == {}


def test_the_engine_has_modules_to_check():
    modules = _modules()
    assert "gpu_worker" in modules and "gpu_worker.convert" in modules
    assert len(modules) >= 10


@pytest.mark.parametrize("module", _modules())
def test_importing_an_engine_module_loads_nothing_forbidden(module):
    loaded = _loaded_by(module)
    assert module in loaded  # the probe really imported it
    assert [name for name in loaded if _forbidden(name)] == []


def test_a_forbidden_import_is_seen_in_sys_modules():
    """The probe itself: a module that imports `flows` shows it in the modules it loaded."""
    loaded = _loaded_by("flows.settings")
    assert any(name == "flows" for name in loaded)
