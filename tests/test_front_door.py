"""The front door: make_all.py, the generated tables of paper_repro.md, and every file, figure and test the
docs name."""

import fnmatch
import re
import sys
import textwrap

import pandas as pd
import pytest

from conftest import FIGURES, ROOT, load_script

DOCS = [ROOT / "README.md", ROOT / "paper_repro.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.fixture(scope="module")
def make_all():
    return load_script("make_all")


@pytest.fixture(scope="module")
def tables():
    return load_script("repro_tables")


# ---- make_all -----------------------------------------------------------------------------------------------
def _fake_scripts(folder):
    folder.mkdir()
    ok = """
        import sys
        from pathlib import Path
        out = Path(sys.argv[sys.argv.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "{name}.csv").write_text("quick,value\\n" + str("--quick" in sys.argv) + ",1\\n")
        """
    (folder / "alpha.py").write_text(textwrap.dedent(ok.format(name="alpha")))
    (folder / "broken.py").write_text("raise RuntimeError('deliberate failure for the test')\n")
    (folder / "zeta.py").write_text(textwrap.dedent(ok.format(name="zeta")))
    (folder / "_helper.py").write_text("raise SystemExit('private modules are not scripts')\n")


def test_make_all_reports_the_failing_script_and_keeps_the_others(make_all, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MDM_NO_PROGRESS", "1")
    scripts, out, logs = tmp_path / "scripts", tmp_path / "out", tmp_path / "logs"
    _fake_scripts(scripts)
    assert [p.stem for p in make_all.discover(scripts)] == ["alpha", "broken", "zeta"]
    with pytest.raises(SystemExit) as exc:
        make_all.main(["--quick", "--scripts-dir", str(scripts), "--out", str(out), "--logs", str(logs)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "1 of 3 scripts FAILED" in err and "broken: exit code 1" in err
    assert "deliberate failure for the test" in err  # the log's tail is shown
    for name in ("alpha", "zeta"):  # the scripts before and after the failure wrote their outputs
        assert pd.read_csv(out / f"{name}.csv").quick.tolist() == [True]
    summary = pd.read_json(logs / "make_all.json").results.tolist()
    assert [(r["script"], r["status"]) for r in summary] == [("alpha", "ok"), ("broken", "failed"), ("zeta", "ok")]
    # parallel runs give the same report, in the same order
    with pytest.raises(SystemExit):
        make_all.main(["--quick", "--jobs", "2", "--scripts-dir", str(scripts), "--out", str(out), "--logs", str(logs)])
    assert [r["status"] for r in pd.read_json(logs / "make_all.json").results] == ["ok", "failed", "ok"]


def test_make_all_selection_and_bad_input(make_all, tmp_path, monkeypatch):
    monkeypatch.setenv("MDM_NO_PROGRESS", "1")
    scripts = tmp_path / "scripts"
    _fake_scripts(scripts)
    res = make_all.main(["--quick", "--scripts-dir", str(scripts), "--out", str(tmp_path / "o"), "--logs",
                         str(tmp_path / "l"), "--skip", "broken"])  # fmt: skip
    assert [(r.script, r.status) for r in res] == [("alpha", "ok"), ("zeta", "ok")]
    with pytest.raises(ValueError, match="unknown script.*'nope'.*alpha"):
        make_all.main(["--quick", "--scripts-dir", str(scripts), "--only", "nope"])
    with pytest.raises(ValueError, match="--jobs"):
        make_all.main(["--quick", "--scripts-dir", str(scripts), "--jobs", "0"])


def test_make_all_knows_every_experiment_script(make_all):
    names = {p.stem for p in make_all.discover()}
    on_disk = {p.stem for p in (ROOT / "experiments").glob("*.py") if not p.stem.startswith("_")} - {
        "make_all",
        "repro_tables",
    }
    assert names == on_disk and "steps_vs_length" in names


def test_make_all_replot_redraws_from_the_csvs(make_all, tmp_path, monkeypatch):
    """--replot draws the PNG from the CSV alone (the committed figures follow a style change this way), skips
    scripts without a figure, and names a script whose CSV is missing."""
    monkeypatch.setenv("MDM_NO_PROGRESS", "1")
    monkeypatch.setenv("MDM_PNG_DPI", "40")
    (tmp_path / "kl_vs_steps.csv").write_bytes((FIGURES / "kl_vs_steps.csv").read_bytes())
    res = make_all.main(["--replot", "--only", "kl_vs_steps,refinement_search", "--out", str(tmp_path), "--logs",
                         str(tmp_path / "l")])  # fmt: skip
    assert [(r.script, r.status) for r in res] == [("kl_vs_steps", "ok"), ("refinement_search", "skipped")]
    assert (tmp_path / "kl_vs_steps.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        make_all.main(["--replot", "--only", "eb_sampler", "--out", str(tmp_path), "--logs", str(tmp_path / "l")])
    assert [r["status"] for r in pd.read_json(tmp_path / "l" / "make_all.json").results] == ["failed"]


def test_every_figure_script_can_replot():
    for path in sorted((ROOT / "experiments").glob("*.py")):
        src = path.read_text()
        if "write_png" in src and not path.stem.startswith("_"):
            assert "\ndef replot(" in src, f"{path.name} writes PNGs but has no replot(out)"


@pytest.mark.slow
def test_make_all_quick_runs_a_real_script(make_all, tmp_path, monkeypatch):
    """The real thing on the cheapest script (5-15 s: a fresh process imports JAX and compiles). By default the
    suite runs make_all on the fake scripts above and every script's --quick in-process in its own module."""
    monkeypatch.setenv("MDM_PNG_DPI", "40")
    res = make_all.main(["--quick", "--only", "kl_vs_steps", "--out", str(tmp_path), "--logs", str(tmp_path / "l")])
    assert [r.status for r in res] == ["ok"]
    assert {"kl_vs_steps.csv", "kl_vs_steps.png", "kl_vs_steps.json"} <= {p.name for p in tmp_path.iterdir()}


@pytest.mark.slow
def test_make_all_quick_runs_every_script(make_all, tmp_path, monkeypatch):
    monkeypatch.setenv("MDM_PNG_DPI", "40")
    res = make_all.main(["--quick", "--out", str(tmp_path), "--logs", str(tmp_path / "l")])
    assert all(r.status == "ok" for r in res), [r for r in res if r.status != "ok"]


# ---- one figure style ----------------------------------------------------------------------------------------
def test_every_script_uses_the_one_figure_style():
    style = load_script("_style")
    for path in sorted((ROOT / "experiments").glob("*.py")):
        if path.stem.startswith("_") or path.stem in ("make_all", "repro_tables"):
            continue
        src = path.read_text()
        if "plt.subplots" not in src:
            continue  # writes no figure (refinement_search: JSON only)
        assert "setup()" in src, f"{path.name} must call _common.setup() (it applies experiments/_style.py)"
        assert "figsize=(" not in src, f"{path.name}: size figures with _style.figsize, not a literal"
    families = {  # methods drawn together must differ in colour
        "Jia2025 estimators": ["standard", "standard (eps=0)", "P-POTS (p*)", "P-POTS (fit)", "MIRROR", "StraTS",
                               "EMA", "ISAD", "P-POTS+MIRROR"],
        "Garg2025 methods": ["uniform order", "exact gradient", "RLOO over orders", "RLOO over masks"],
        "Yang2025 methods": ["plain MDM", "remask (prefix)", "remask (factor)"],
        "policies": ["RandomOrder", "LeftToRight", "TopK", "EB", "PlackettLuce"],
        "schedules": ["linear", "cosine", "cosine_squared", "chen_sine", "beta"],
    }  # fmt: skip
    for family, names in families.items():
        colours = [style.color(n) for n in names]
        assert len(set(colours)) == len(names), (family, colours)
        assert "#444444" not in colours, f"{family}: a method without a colour of its own"


# ---- the generated tables -----------------------------------------------------------------------------------
def test_generated_tables_equal_the_committed_csvs(tables):
    assert tables.update(ROOT / "paper_repro.md", FIGURES, check=True) == [], (
        "paper_repro.md's generated tables differ from figures/*.csv: run python experiments/repro_tables.py"
    )
    blocks = tables.generated_blocks((ROOT / "paper_repro.md").read_text())
    assert set(blocks) == set(tables.TABLES)
    for name, rows in tables.TABLES.items():
        assert blocks[name].count("\n| ") == len(rows)  # header + one line per row


def test_generated_tables_quick_is_the_full_run(tables, capsys):
    """--quick (accepted like the experiment scripts') checks the same tables: the full run reads the committed
    CSVs and takes a fraction of a second."""
    assert tables.main(["--quick", "--check"]) == []
    assert "up to date" in capsys.readouterr().out


def test_generated_table_follows_the_csv(tables, tmp_path):
    """Change one committed number and the generated cell changes with it (so the check above can fail)."""
    sp = pd.read_csv(FIGURES / "eb_sampler_speedup.csv")
    row = (sp.task == "sudoku") & (sp.denoiser == "exact") & (sp.policy == "EB") & (sp.tolerance == 0)
    row &= sp.proxy == "margin"
    assert row.sum() == 1
    sp.loc[row, "speedup"] = 7.25
    sp.to_csv(tmp_path / "eb_sampler_speedup.csv", index=False)
    cell = tables.eb_exact_cell(tmp_path)
    assert cell.startswith("Sudoku, 8 blanks") and " / 7.25 / " in cell.split(";")[0]
    md = tmp_path / "repro.md"
    md.write_text("x\n<!-- generated: benhamu2025 -->\nold\n<!-- end generated: benhamu2025 -->\ny\n")
    with pytest.raises(ValueError, match="no '<!-- generated: core -->'"):
        tables.update(md, FIGURES)


def test_generated_tables_missing_csv_is_a_clear_error(tables, tmp_path):
    with pytest.raises(FileNotFoundError, match="kl_vs_steps.csv is missing.*make_all"):
        tables.kl_vs_steps_cell(tmp_path)


# ---- the worked example of docs/extending.md runs as written ------------------------------------------------
def test_worked_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "extending.md").read_text(), re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/extending.md", "exec"), {"__name__": "docs_extending"})  # its asserts run
    out = capsys.readouterr().out
    # the numbers the page quotes, log(4 / 0.99) and 1 - 0.25 * 0.99 (derived by hand on the page)
    assert "KL(q || p) = 1.3963 nats" in out and "SER = 0.7525" in out


# ---- every file, figure and test named in the docs exists ---------------------------------------------------
_REF = re.compile(  # a repository path (braces: alternatives, *: glob), optionally ::name
    r"((?:tests|theory|synthetic|experiments|benchmarks|figures|docs)/(?:[\w./*-]|\{[^}]*\})+?)"
    r"(?:::([\w*\[\]-]+))?(?=[`)\s|,;:]|$)"
)


def _expand(path: str) -> list[str]:
    m = re.search(r"\{([^}]*)\}", path)  # figures/x{.csv,.png}
    if m:
        return [q for alt in m.group(1).split(",") for q in _expand(path[: m.start()] + alt + path[m.end() :])]
    return [path]


def _defined(path, name: str) -> bool:
    names = re.findall(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)|^(\w+)\s*[:=]", path.read_text(), re.M)
    names = {a or b for a, b in names}
    base = name.split("[")[0]
    return any(fnmatch.fnmatch(n, base) or n.startswith(base) for n in names)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_file_and_test_exists(doc):
    missing = []
    for m in _REF.finditer(doc.read_text()):
        raw, name = m.group(1).rstrip("."), m.group(2)
        for path in _expand(raw):
            hits = sorted(ROOT.glob(path)) if "*" in path else ([ROOT / path] if (ROOT / path).exists() else [])
            if not hits:
                missing.append(path)
            elif name and path.endswith(".py") and not any(_defined(h, name) for h in hits):
                missing.append(f"{path}::{name}")
    assert not missing, f"{doc.name} names what does not exist: {sorted(set(missing))}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0"]))
