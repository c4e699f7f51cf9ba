"""The HTML report (templates/report.html.j2): verdict badges, summary lines, table of contents, folded "not run"
claims, scrolling tables, no raw markdown, the deviations section; and a headless-browser check that the page is
no wider than a 1400 px window (skipped without ``chromium``)."""

import dataclasses
import html as htmllib
import re
import shutil
import subprocess

import pytest

from uqkd.experiments import EXPERIMENTS, list_experiments
from uqkd.experiments.base import Deviation
from uqkd.report import claims as C
from uqkd.report.claims import CODE_CHECK, NOT_RUN, ClaimSpec
from uqkd.report.report import HTML_MAX_ROWS, build_report_and_claims, md_inline, verdict_class
from uqkd.runner import run_experiment

SMALL = {
    "teacher-noise-linear": {"n_students": 20},
    "variance-aware-linear": {"n_students": 20, "alphas": "0.1,1", "ks": "1,3"},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    for name, over in SMALL.items():
        run_experiment(name, out=out, overrides=dict(over), progress=False, workers=1)
    return out


@pytest.fixture
def report(results, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(results, out)
    md, html, claims = build_report_and_claims(out)
    return out, md.read_text(), html.read_text(), claims


def _text(h):
    """The visible text of an HTML fragment (tags dropped, entities decoded, spaces collapsed)."""
    h = re.sub(r"<(style|script)\b.*?</\1>", " ", h, flags=re.S)
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", h)))


def _section(h, anchor):
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', h, flags=re.S)
    assert m, anchor
    return m.group(1)


def test_md_inline_escapes_first_then_converts():
    assert md_inline("use `x < 1` and **bold & brave**") == (
        "use <code>x &lt; 1</code> and <strong>bold &amp; brave</strong>")
    assert md_inline("`**not bold**` <script>alert(1)</script>") == (
        "<code>**not bold**</code> &lt;script&gt;alert(1)&lt;/script&gt;")
    assert md_inline("a `<b onclick=x>` b") == "a <code>&lt;b onclick=x&gt;</code> b"
    assert md_inline("no markup, 2 * 3 ** 2") == "no markup, 2 * 3 ** 2"
    assert md_inline("lone ` backtick") == "lone ` backtick"  # not markup: left as written
    assert md_inline(3.5) == "3.5"


def test_verdict_classes_are_one_per_verdict():
    classes = {verdict_class(v) for v in C.VERDICTS}
    assert len(classes) == len(C.VERDICTS)
    assert verdict_class("not computable") == "v-not-computable" and verdict_class("holds") == "v-holds"


def test_toc_anchors_summary_lines_and_badges(report):
    out, _, h, claims = report
    toc = re.search(r'<nav class="toc".*?</nav>', h, flags=re.S).group(0)
    hrefs = re.findall(r'href="#([^"]+)"', toc)
    for anchor in ("claims-paper", "claims-beyond", "deviations", "sec-4", "sec-7",
                   "exp-teacher-noise-linear", "exp-variance-aware-linear"):
        assert anchor in hrefs
    ids = set(re.findall(r'\bid="([^"]+)"', h))
    assert set(hrefs) <= ids  # every entry of the table of contents lands somewhere
    assert set(re.findall(r'href="#([^"]+)"', h)) <= ids  # and so does every other in-page link
    paper = [c for c in claims if not c.beyond and not c.code_check]
    n = {v: sum(c.verdict == v for c in paper) for v in C.VERDICTS}
    line = _text(re.search(r'<p class="summary">.*?</p>', _section(h, "claims-paper"), flags=re.S).group(0))
    want = f"Claims of the paper: {n['holds']} hold {n['contradicted']} contradicted {n['inconclusive']} inconclusive"
    assert line.strip().startswith(want), line
    assert f"{n[NOT_RUN]} not run" in line
    for c in claims:  # every verdict shown is a coloured badge of its own class
        if c.verdict != NOT_RUN:
            row = re.search(rf'<tr id="claim-{re.escape(c.claim_id)}".*?</tr>', h, flags=re.S).group(0)
            assert f'class="badge {verdict_class(c.verdict)}"' in row
    for cls in ("v-holds", "v-contradicted", "v-inconclusive", "v-not-run", "v-not-computable", "v-damaged",
                "v-error", "kind-code-check"):
        assert re.search(rf"\.{cls}\{{[^}}]*background", h), cls  # each class has its colour


def test_not_run_claims_are_folded_into_one_line_per_section(report):
    _, md, h, claims = report
    for anchor, beyond in (("claims-paper", False), ("claims-beyond", True)):
        sec = _section(h, anchor)
        not_run = [c for c in claims if c.beyond == beyond and c.verdict == NOT_RUN and not c.code_check]
        assert not_run
        lines = re.findall(r'<p class="notrun">.*?</p>', sec, flags=re.S)
        assert len(lines) == 1
        for c in not_run:
            assert f'id="claim-{c.claim_id}"' in lines[0]
            assert f'<tr id="claim-{c.claim_id}"' not in sec
        assert f"{len(not_run)} claims:" in _text(lines[0])
    for c in claims:  # report.md still lists every claim
        assert c.claim_id in md


def test_tables_scroll_and_long_key_numbers_are_cut(report):
    out, md, h, _ = report
    assert re.search(r"\.scroll\{[^}]*overflow-x:auto", h)
    assert h.count("<table") == len(re.findall(r'<div class="scroll"><table', h)) > 0
    exp = "variance-aware-linear"
    sec = _section(h, f"exp-{exp}")
    keys = re.search(r'<table class="data keys">.*?</table>', sec, flags=re.S).group(0)
    n_rows = keys.count("<tr>") - 1  # less the header
    assert n_rows == HTML_MAX_ROWS
    m = re.search(r'(\d+) more rows \(of (\d+)\): see <a href="([^"]+)">', sec)
    assert m and int(m.group(1)) + HTML_MAX_ROWS == int(m.group(2))
    assert m.group(3) == f"{exp}/results.csv" and (out / m.group(3)).is_file()  # relative to report.html
    # report.md keeps every row
    part = md.split(f"### `{exp}`")[1].split("Key numbers:")[1]
    assert part.split("\n\n")[1].count("\n") - 1 == int(m.group(2))


def test_no_raw_markdown_outside_code(report):
    _, _, h, _ = report
    body = re.sub(r"<(code|pre|script|style)\b.*?</\1>", "", h, flags=re.S)
    assert "`" not in body
    assert "**" not in _text(body)
    assert "<code>" in _section(h, "exp-teacher-noise-linear")  # the settings' profile `...`


def test_deviations_section_lists_each_experiment_s_deviations(results, tmp_path, monkeypatch):
    list_experiments()
    name = "teacher-noise-linear"
    devs = (Deviation("train/test split", "`random_state=42`", "seeded <permutation>", "**scripts** unavailable"),
            Deviation("noise", "fixed", "drawn per student"))
    monkeypatch.setitem(EXPERIMENTS, name, dataclasses.replace(EXPERIMENTS[name], deviations=devs))
    monkeypatch.setitem(EXPERIMENTS, "variance-aware-linear",
                        dataclasses.replace(EXPERIMENTS["variance-aware-linear"], deviations=()))
    out = tmp_path / "r"
    shutil.copytree(results, out)
    md, html, _ = build_report_and_claims(out)
    text, h = md.read_text(), html.read_text()
    assert "## Deviations from the published scripts" in text
    assert ("| teacher-noise-linear | train/test split | `random_state=42` | seeded <permutation> | "
            "**scripts** unavailable |") in text
    assert "| teacher-noise-linear | noise | fixed | drawn per student |  |" in text
    assert text.count("Deviations from the published script: none listed.") == 1  # variance-aware-linear's
    sec = _section(h, "deviations")
    assert "<h2>Deviations from the published scripts</h2>" in sec
    assert 'rowspan="2"' in sec and "<code>random_state=42</code>" in sec
    assert "seeded &lt;permutation&gt;" in sec and "<strong>scripts</strong> unavailable" in sec
    own = _section(h, f"exp-{name}")
    assert "train/test split" in own and "drawn per student" in own
    assert "Deviations from the published script: none listed." in _text(_section(h, "exp-variance-aware-linear"))
    # none anywhere: said once, in both files
    monkeypatch.setitem(EXPERIMENTS, name, dataclasses.replace(EXPERIMENTS[name], deviations=()))
    md, html, _ = build_report_and_claims(out)
    assert "None listed for the experiments in this report." in md.read_text()
    assert "None listed for the experiments in this report." in _text(_section(html.read_text(), "deviations"))


def test_code_checks_have_their_own_section(results, tmp_path, monkeypatch):
    check = ClaimSpec("CC1", "4", "The <closed form> matches `theory`", ("teacher-noise-linear",),
                      lambda t: ("identity", 1.0, "[1, 1]", "holds"), kind=CODE_CHECK)
    monkeypatch.setattr(C, "CLAIMS", [*C.CLAIMS, check])
    out = tmp_path / "r"
    shutil.copytree(results, out)
    md, html, claims = build_report_and_claims(out)
    h, text = html.read_text(), md.read_text()
    sec = _section(h, "code-checks")
    row = re.search(r'<tr id="claim-CC1".*?</tr>', sec, flags=re.S).group(0)
    assert '<span class="badge kind-code-check">code check</span> <span class="badge v-holds">holds</span>' in row
    assert "The &lt;closed form&gt; matches <code>theory</code>" in row
    assert "claim-CC1" not in _section(h, "claims-paper")
    checks = [c for c in claims if c.code_check]
    n_hold = sum(c.verdict == "holds" for c in checks)
    n_inc = sum(c.verdict == "inconclusive" for c in checks)
    assert _text(re.search(r'<p class="summary">.*?</p>', sec, flags=re.S).group(0)).strip().startswith(
        f"Code checks: {n_hold} hold 0 contradicted {n_inc} inconclusive")
    assert h.index('id="claims-beyond"') < h.index('id="code-checks"') < h.index('id="deviations"')
    assert 'href="#code-checks"' in h
    assert "## Code checks" in text and "| CC1 | 4 |" in text.split("## Code checks")[1]
    assert "| CC1 |" not in text.split("## Code checks")[0]


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_screenshot_page_fits_a_1400px_window(report, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not on PATH: no headless screenshot or page-width check")
    out, _, _, _ = report
    url = (out / "report.html").resolve().as_uri()
    common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}"]
    png = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1400,900", f"--screenshot={png}", url], capture_output=True, timeout=120,
                   check=False)
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run([*common, "--window-size=1400,900", "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120, check=False).stdout
    m = re.search(r'data-scroll-width="(\d+)"', dom)
    assert m, dom[:500]
    assert 0 < int(m.group(1)) <= 1400
