"""The layer table of docs/architecture.md "Layers", enforced on every import under `ludl/` (read with `ast`).

Every `import x`, `from x import y` and relative import counts, at module level and inside functions (and under
`if TYPE_CHECKING:`: a type-only import still ties the layers together), and so do the module paths that
`ludl._lazy.lazy_getattr` tables import by name. A wrong import fails with its file, line and the rule it breaks.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "ludl"
ARCHITECTURE_DOC = REPO_ROOT / "docs" / "architecture.md"

# The shared base every layer may use, and the entry points; everything else is a layer named by its package.
BASE_MODULES = frozenset({"ludl", "ludl.errors", "ludl._lazy", "ludl.progress"})
# The packaged configs (YAML and their dataclass schemas) are base too: the CLI composes them, synth reads presets.
BASE_PACKAGES = ("ludl.configs",)
CLI_MODULES = frozenset({"ludl.cli", "ludl.__main__"})

# layer → the ludl layers it may import besides itself and the base (docs/architecture.md "Layers").
_BELOW_EVALUATION = ("physics", "imaging", "io", "report", "synth", "dosimetry", "data", "models", "training")
ALLOWED: dict[str, frozenset[str]] = {
    "base": frozenset(),
    "physics": frozenset(),
    "imaging": frozenset({"physics"}),
    "io": frozenset({"physics", "imaging"}),
    "report": frozenset({"physics", "imaging", "io"}),
    "synth": frozenset({"physics", "imaging", "io"}),
    "dosimetry": frozenset({"physics", "imaging", "io", "report"}),
    "data": frozenset({"physics", "imaging", "io"}),
    "models": frozenset({"physics"}),
    "training": frozenset({"physics", "imaging", "io", "data", "models"}),
    "inference": frozenset({"physics", "imaging", "io", "data", "models", "dosimetry", "report"}),
    "evaluation": frozenset({*_BELOW_EVALUATION, "inference"}),
    "cli": frozenset({*_BELOW_EVALUATION, "inference", "evaluation"}),
}

_LUDL_MODULE_STRING = re.compile(r"^ludl(\.[A-Za-z_]\w*)+$")


@dataclass(frozen=True)
class Import:
    """One import of a ludl module: where it stands and what it names."""

    file: Path
    line: int
    target: str


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """Dotted module name of a file under `root` (`ludl/io/pet.py` → `ludl.io.pet`; packages drop `__init__`)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    """Whether the dotted name is a module or package under `root` (so `from ludl import io` imports `ludl.io`)."""
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    base = root / relative
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """Absolute module named by a `from … import` (relative levels resolved against `module`)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def ludl_imports(path: Path, root: Path = PACKAGE) -> list[Import]:
    """Every ludl module `path` imports, anywhere in the file, with its line."""
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(node, module, is_package)
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                # `from ludl import io` imports the package ludl.io; `from ludl.io import read_pet` imports ludl.io.
                targets.append(candidate if _is_module(candidate, root) else source)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _LUDL_MODULE_STRING.match(node.value) and _is_module(node.value, root):
                targets = [node.value]  # a lazy import by module path (ludl._lazy)
        found += [Import(path, node.lineno, t) for t in targets if t == "ludl" or t.startswith("ludl.")]
    return sorted(set(found), key=lambda i: (i.line, i.target))  # `from m import a, b` is one import of m


def layer_of(module: str) -> str:
    """Layer of a dotted ludl module name: `base`, `cli` or the package below `ludl` (`unknown` if not a layer)."""
    if module in BASE_MODULES or any(module == p or module.startswith(p + ".") for p in BASE_PACKAGES):
        return "base"
    if module in CLI_MODULES:
        return "cli"
    package = module.split(".")[1]
    return package if package in ALLOWED and package not in ("base", "cli") else "unknown"


def violations(root: Path = PACKAGE) -> list[str]:
    """Every import under `root` that the layer table forbids, as `file:line: importer → imported (rule)`."""
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        source_layer = layer_of(importer)
        where = path.relative_to(root.parent)
        if source_layer == "unknown":
            problems.append(f"{where}:1: module {importer} is in no layer of the table: add it to docs/architecture.md")
            continue
        for imp in ludl_imports(path, root):
            target_layer = layer_of(imp.target)
            if imp.target in CLI_MODULES and importer not in CLI_MODULES:
                rule = "nothing imports ludl.cli"
            elif target_layer in ("base", source_layer):
                continue
            elif target_layer in ALLOWED[source_layer]:
                continue
            else:
                allowed = ", ".join(sorted(ALLOWED[source_layer])) or "only the base"
                rule = f"{source_layer} may import {allowed}"
            problems.append(f"{where}:{imp.line}: {importer} → {imp.target} ({rule})")
    return problems


def test_every_import_follows_the_layer_table() -> None:
    problems = violations()
    assert not problems, 'imports against docs/architecture.md "Layers":\n' + "\n".join(problems)


def test_the_collector_sees_every_kind_of_import(tmp_path: Path) -> None:
    # A throw-away package with one import of each kind, each at a known line.
    root = tmp_path / "ludl"
    (root / "io").mkdir(parents=True)
    (root / "physics").mkdir()
    for init in (root, root / "io", root / "physics"):
        (init / "__init__.py").write_text("")
    (root / "physics" / "dose.py").write_text("")
    (root / "io" / "pet.py").write_text(
        "import numpy\n"  # 1: not ludl
        "from . import nifti\n"  # 2: relative, sibling module name that does not exist → the package
        "from ..physics import dose\n"  # 3: relative two levels → ludl.physics.dose
        "def f():\n"
        "    import ludl.cli\n"  # 5: function level
        "    from ludl import physics\n"  # 6: a package imported by name
        "TABLE = {'x': 'ludl.physics.dose'}\n"  # 7: lazy import by module path
        "TEXT = 'ludl.no.such.module'\n"  # 8: not a module: ignored
    )
    found = [(i.line, i.target) for i in ludl_imports(root / "io" / "pet.py", root)]
    assert sorted(found) == [
        (2, "ludl.io"),
        (3, "ludl.physics.dose"),
        (5, "ludl.cli"),
        (6, "ludl.physics"),
        (7, "ludl.physics.dose"),
    ]
    (root / "physics" / "bad.py").write_text("from ludl.io import pet\n")
    assert violations(root) == [
        "ludl/io/pet.py:5: ludl.io.pet → ludl.cli (nothing imports ludl.cli)",
        "ludl/physics/bad.py:1: ludl.physics.bad → ludl.io.pet (physics may import only the base)",
    ]


def _documented_table() -> dict[str, frozenset[str]]:
    """The "Layers" table of docs/architecture.md: layer → the ludl layers it may import."""
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    section = text.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    table: dict[str, frozenset[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        name = re.search(r"`ludl/(\w+)", cells[0])
        layer = "base" if "errors.py" in cells[0] else "cli" if "cli.py" in cells[0] else name and name.group(1)
        allowed = cells[-1]
        if allowed.startswith("everything"):
            below = [k for k in ALLOWED if k not in ("base", "cli", "evaluation")]
            table[str(layer)] = frozenset(below + (["evaluation"] if layer == "cli" else []))
        else:
            table[str(layer)] = frozenset(re.findall(r"[a-z]+", allowed)) - {"nothing", "the", "base", "only"}
    return table


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_the_documented_table_is_the_enforced_one(layer: str) -> None:
    documented = _documented_table()
    assert layer in documented, f"layer {layer} missing from the table in {ARCHITECTURE_DOC}"
    assert documented[layer] == ALLOWED[layer], f'{ARCHITECTURE_DOC} "Layers" and {__file__} disagree on {layer}'


# ------------------------------------------------------------------------------------ the documents cited by code

# Code comments cite these sections by title (`docs/architecture.md "Data formats"`) and number (`physics.md §4`).
ARCHITECTURE_SECTIONS = (
    "Layers",
    "Data formats",
    "The network",
    "Jobs and configs",
    "Scaling out",
    "Evaluation",
    "Public names",
)
USER_DOCS = (
    REPO_ROOT / "README.md",
    REPO_ROOT / "tests" / "data" / "README.md",
    *sorted((REPO_ROOT / "docs").glob("*.md")),
)
_LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_cited_sections_exist() -> None:
    headings = re.findall(r"^## (.+)$", ARCHITECTURE_DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert [h for h in ARCHITECTURE_SECTIONS if h not in headings] == []
    physics = re.findall(r"^## (\d)\. ", (REPO_ROOT / "docs" / "physics.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert physics == ["1", "2", "3", "4", "5", "6"]


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_user_docs_link_only_inside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text, f"{doc} points outside the repository"
    for target, anchor in _LINK.findall(text):
        if "://" in target:
            continue
        resolved = (doc.parent / target).resolve() if target else doc
        assert resolved.is_relative_to(REPO_ROOT) and resolved.exists(), f"{doc}: broken link {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved.read_text(encoding="utf-8")), f"{doc}: no heading #{anchor} in {target}"
