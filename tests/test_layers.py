"""The two layers: ``wspace_core`` (contracts and plugin machinery) never imports the application
package ``wspace``, and bundled plugins build on the core alone."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _application_imports(root: Path) -> dict[str, list[str]]:
    offences = {}
    for path in sorted(root.rglob("*.py")):
        bad = sorted(m for m in _imported_modules(path) if m == "wspace" or m.startswith("wspace."))
        if bad:
            offences[str(path.relative_to(ROOT))] = bad
    return offences


def test_the_core_imports_no_application_module():
    assert len(list((ROOT / "wspace_core").rglob("*.py"))) > 10
    assert _application_imports(ROOT / "wspace_core") == {}


def test_bundled_plugins_build_on_the_core_alone():
    assert _application_imports(ROOT / "plugins") == {}


def test_the_check_sees_an_application_import(tmp_path):
    (tmp_path / "bad.py").write_text("import torch\nfrom wspace.training import pretrain\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert _application_imports(tmp_path) == {"bad.py": ["wspace.training"]}
    finally:
        ROOT = saved
