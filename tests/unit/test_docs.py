"""The documentation is self-contained and names only things that exist.

* every citation of the method file is of ``docs/METHOD.md`` and names a section it has;
* every repository path that a ``--help`` text, the README or a page of the documentation site
  (``docs/**/*.md``) names exists, and so does every relative link and image of those pages;
* every ``openmm_cgkd`` module and name those pages cite (``openmm_cgkd.x.y`` in the text,
  ``from openmm_cgkd.x import y`` in their Python examples) imports;
* every third-party module the package imports unconditionally is a declared dependency;
* the training code uses Lightning's public interface only (no private hooks or attributes).
"""
import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METHOD = ROOT / "docs" / "METHOD.md"
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh"}


def _repo_text_files():
    for sub in ("openmm_cgkd", "examples", "configs", "systems", "models", "docs", "benchmarks"):
        for p in sorted((ROOT / sub).rglob("*")):
            if p.is_file() and p.suffix in TEXT_SUFFIXES and "aa_" not in p.parent.name:
                yield p
    yield ROOT / "README.md"


def _method_sections() -> set[str]:
    heads = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", METHOD.read_text(), flags=re.M)
    return set(heads)


def test_method_citations_point_to_docs_and_to_existing_sections():
    assert METHOD.is_file()
    sections = _method_sections()
    assert {"1", "2", "2.3", "2.4", "2.5", "2.6", "3", "4"} <= sections
    cited = 0
    for p in _repo_text_files():
        text = p.read_text(errors="replace")
        bare = re.findall(r"(?<![\w/`(])METHOD\.md", text)  # a Markdown link `(METHOD.md)` is relative
        if p != METHOD:
            assert not bare, f"{p.relative_to(ROOT)} cites METHOD.md without its folder (docs/METHOD.md)"
        for m in re.finditer(r"docs/METHOD\.md`?,? sections? ([\d.]+(?:(?:,| and) [\d.]+)*)", text):
            for sec in re.split(r",| and ", m.group(1)):
                sec = sec.strip().rstrip(".")
                cited += 1
                assert sec in sections, f"{p.relative_to(ROOT)} cites docs/METHOD.md section {sec}, which it lacks"
    assert cited >= 15  # the code and README cite it throughout


def _help_texts(capsys) -> dict[str, str]:
    from openmm_cgkd.cli.main import build_parser

    top = build_parser().format_help()
    names = re.findall(r"^    ([a-z][\w-]+)\s", top.split("COMMAND", 2)[-1], flags=re.M)
    texts = {"cgkd": top}
    for name in names:
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        texts[name] = capsys.readouterr().out
    return texts


PATH_RE = re.compile(r"(?<![\w/.-])((?:configs|models|systems|docs|examples|benchmarks|openmm_cgkd)/[\w./-]*[\w])")


def _named_paths(text: str) -> set[str]:
    return {m.group(1) for m in PATH_RE.finditer(text.replace("\n", " "))}


def test_help_texts_name_existing_files(capsys):
    texts = _help_texts(capsys)
    assert {"train-teachers", "train-student", "benchmark", "demo"} <= set(texts)
    checked = 0
    for command, text in texts.items():
        # argparse wraps long help lines at hyphens: undo that before looking for paths
        flat = re.sub(r"-\n\s*", "-", text)
        for path in _named_paths(flat):
            if "untrained-demo" in path or path.startswith("models/my"):
                continue  # built on first use
            checked += 1
            assert (ROOT / path).exists(), f"`cgkd {command} --help` names {path}, which does not exist"
    assert checked >= 5


def _doc_pages() -> list[Path]:
    """The README and every Markdown page of the documentation site (not its build output)."""
    pages = [ROOT / "README.md"]
    for p in sorted((ROOT / "docs").rglob("*.md")):
        if not {"_build", "generated"} & set(p.relative_to(ROOT / "docs").parts):
            pages.append(p)
    return pages


DOC_PATH_RE = re.compile(
    r"(?<![\w/.$<-])((?:configs|models|systems|docs|examples|benchmarks|openmm_cgkd|tests|\.ci)/[\w./*-]*[\w*])")
# paths the docs name that are made on first use or stand for the user's own files
MADE_ON_USE = ("models/untrained-demo", "models/my", "models/untrained", "docs/_build")


def test_doc_pages_are_the_site():
    names = {p.relative_to(ROOT).as_posix() for p in _doc_pages()}
    assert {"README.md", "docs/index.md", "docs/METHOD.md", "docs/ARCHITECTURE.md", "docs/cli.md",
            "docs/api.md", "docs/des_study.md", "docs/getting_started.md", "docs/changelog.md"} <= names
    assert len([n for n in names if n.startswith("docs/guide/")]) >= 10


def test_doc_pages_name_existing_files():
    checked = 0
    for page in _doc_pages():
        text = page.read_text()
        for m in DOC_PATH_RE.finditer(text):
            path = m.group(1).rstrip(".")
            if path.startswith(MADE_ON_USE):
                continue
            checked += 1
            found = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
            assert found, f"{page.relative_to(ROOT)} names {path}, which does not exist"
    assert checked >= 200


LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_doc_pages_link_to_existing_files():
    """Relative links and images resolve from the page that holds them (anchors are Sphinx's job)."""
    checked = 0
    for page in _doc_pages():
        for target in LINK_RE.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            checked += 1
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
    assert checked >= 30


def _cited_names() -> dict[str, str]:
    """``openmm_cgkd`` names cited by the pages: dotted names in the text, imports in code blocks."""
    cited: dict[str, str] = {}
    for page in _doc_pages():
        text = page.read_text()
        where = str(page.relative_to(ROOT))
        for name in re.findall(r"(?<![\w/.])(openmm_cgkd(?:\.\w+)+)", text):
            cited.setdefault(name, where)
        for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("openmm_cgkd"):
                    for alias in node.names:
                        cited.setdefault(f"{node.module}.{alias.name}", where)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.startswith("openmm_cgkd"):
                            cited.setdefault(alias.name, where)
    return cited


def _resolves(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_doc_pages_cite_existing_names():
    cited = _cited_names()
    assert len(cited) >= 40
    missing = [f"{name} ({where})" for name, where in sorted(cited.items()) if not _resolves(name)]
    assert not missing, f"the docs cite names that do not exist: {missing}"


def test_doc_pages_cite_existing_commands_and_options():
    """Every ``cgkd COMMAND`` the pages cite is a command, and every ``--option`` right after it is
    one of its options."""
    import argparse

    from openmm_cgkd.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}
    checked, problems = 0, []
    for page in _doc_pages():
        for m in re.finditer(r"(?<![\w/.-])cgkd ([a-z][\w-]*)((?: --?[\w-]+)*)", page.read_text()):
            command = m.group(1)
            checked += 1
            if command not in options:
                problems.append(f"{page.relative_to(ROOT)}: cgkd {command}")
                continue
            for opt in m.group(2).split():
                if opt not in options[command] | {"--debug", "--help", "-h"}:
                    problems.append(f"{page.relative_to(ROOT)}: cgkd {command} {opt}")
    assert checked >= 50
    assert not problems, f"the docs cite commands or options that do not exist: {problems}"


def test_readme_and_architecture_name_existing_files():
    arch = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \|", arch, flags=re.M)
    assert len(rows) >= 10
    for path in rows:
        assert (ROOT / path).exists(), f"docs/ARCHITECTURE.md lists {path}, which does not exist"
    # each module file is listed under its own folder (e.g. topology.py is not in serving/)
    for path in rows:
        if path.endswith("/"):
            line = next(l for l in arch.splitlines() if l.startswith(f"| `{path}`"))
            for word in re.findall(r"\b(\w+)\.py\b", line):
                assert (ROOT / path / f"{word}.py").exists(), f"ARCHITECTURE.md places {word}.py in {path}"
    assert "bead topologies" not in next(l for l in arch.splitlines() if l.startswith("| `openmm_cgkd/serving/`"))


# ------------------------------------------------------------------------------- dependencies

def _declared() -> set[str]:
    import tomllib

    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for req in proj["dependencies"]:
        names.add(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def _optional(node: ast.AST, parents: dict) -> bool:
    """An import inside ``try: ... except (ImportError|Exception)``: optional by design."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try) and any(
                h.type is None or any(n in ast.unparse(h.type) for n in ("ImportError", "Exception"))
                for h in node.handlers):
            return True
    return False


def _imported_modules() -> dict[str, str]:
    found: dict[str, str] = {}
    for p in sorted((ROOT / "openmm_cgkd").rglob("*.py")):
        tree = ast.parse(p.read_text())
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            if _optional(node, parents):
                continue
            for m in mods:
                top = m.split(".")[0]
                if top != "openmm_cgkd" and top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, str(p.relative_to(ROOT)))
    return found


def test_every_imported_third_party_module_is_declared():
    declared = _declared()
    dists = metadata.packages_distributions()
    missing = []
    for module, where in _imported_modules().items():
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        assert owners, f"{module} (imported in {where}) is not installed"
        if not owners & declared:
            missing.append(f"{module} ({sorted(owners)}; imported in {where})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert "lightning" in declared


# ------------------------------------------------------------------------------- Lightning

def _resolve(expr: str, aliases: dict[str, str]):
    """The object a dotted name like ``pl.LightningModule`` denotes, through the module's imports."""
    import importlib

    head, *rest = expr.split(".")
    full = ".".join([aliases[head], *rest])
    parts = full.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(full)


def test_training_uses_only_public_lightning_interfaces():
    """No private Lightning module, no private attribute of a trainer, and no class of ours that
    overrides or reads a private member of the Lightning class it derives from."""
    problems = []
    for p in sorted((ROOT / "openmm_cgkd" / "training").glob("*.py")):
        tree = ast.parse(p.read_text())
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning"):
                aliases |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
                if any(part.startswith("_") for part in node.module.split(".")):
                    problems.append(f"{p.name}: imports from private module {node.module}")
            elif isinstance(node, ast.Import):
                aliases |= {a.asname or a.name: a.name for a in node.names if a.name.startswith("lightning")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = ast.unparse(node.value)
                if "trainer" in owner or owner.split(".")[0] in aliases:
                    problems.append(f"{p.name}:{node.lineno}: private attribute {owner}.{node.attr}")
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [_resolve(ast.unparse(b), aliases) for b in node.bases
                     if ast.unparse(b).split(".")[0] in aliases]
            if not bases:
                continue
            own = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            own |= {t.attr for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                    if isinstance(t, ast.Attribute) and ast.unparse(t.value) == "self"}
            for name in own:
                if name.startswith("_") and not name.startswith("__") and any(hasattr(b, name) for b in bases):
                    problems.append(f"{p.name}: {node.name} overrides the private Lightning member {name}")
            for n in ast.walk(node):
                if (isinstance(n, ast.Attribute) and ast.unparse(n.value) == "self" and n.attr.startswith("_")
                        and not n.attr.startswith("__") and n.attr not in own):
                    problems.append(f"{p.name}:{n.lineno}: {node.name} reads the inherited private self.{n.attr}")
    assert not problems, "\n".join(problems)


def test_the_csv_logger_appends_across_sessions(tmp_path):
    """A second session of a run adds its epochs to logs/metrics.csv instead of replacing them."""
    from openmm_cgkd.training.metrics import read_metrics_csv
    from openmm_cgkd.training.trainer import _resumable_csv_logger

    first = _resumable_csv_logger(tmp_path)
    first.log_metrics({"epoch": 0, "train_loss": 2.0}, step=3)
    first.log_metrics({"epoch": 0, "val_loss": 1.5, "lr": 1e-3}, step=3)  # new columns widen the file
    second = _resumable_csv_logger(tmp_path)
    second.log_metrics({"epoch": 1, "train_loss": 1.0}, step=7)
    second.log_metrics({"epoch": 1, "val_loss": 0.5, "lr": 5e-4}, step=7)
    curves = read_metrics_csv(tmp_path / "logs" / "metrics.csv")
    assert curves["train_loss"] == {0: 2.0, 1: 1.0}
    assert curves["val_loss"] == {0: 1.5, 1: 0.5} and curves["lr"] == {0: 1e-3, 1: 5e-4}


def test_ci_runs_the_readme_test_command():
    """`.ci/run` calls the README's test command verbatim (so do docs/getting_started.md), and the
    pytest-xdist options it uses come from a declared dev dependency."""
    import tomllib

    def command(path: Path) -> str:
        found = re.findall(r"uv run (pytest [^\n`]*)", (ROOT / path).read_text())
        assert len(found) == 1, f"{path} should hold one `uv run pytest ...` line, not {found}"
        return found[0].strip()

    readme = command(Path("README.md"))
    assert command(Path(".ci/run")) == readme == command(Path("docs/getting_started.md"))
    assert '-m "not slow"' in readme
    if re.search(r"\s-n\s", readme):
        dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"]
        assert any(re.match(r"pytest-xdist\b", d) for d in dev), "-n needs pytest-xdist in the dev group"
