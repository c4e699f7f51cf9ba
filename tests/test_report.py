import pytest

from uqkd.cli import main
from uqkd.config import UserError
from uqkd.report.claims import CLAIMS, evaluate_claims
from uqkd.report.report import build_report, load_tables
from uqkd.reproduce import select_experiments
from uqkd.runner import run_experiment

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("res")
    run_experiment("teacher-noise-linear", out=out, progress=False, overrides={"n_students": 60})
    run_experiment("bootstrap-linear", out=out, progress=False,
                   overrides={"n_students": 30, "fractions": (0.1, 0.5, 1.0)})
    run_experiment("variance-aware-linear", out=out, progress=False,
                   overrides={"n_students": 60, "alphas": (0.1, 1.0), "ks": (1, 3, 10, 30)})
    return out


def test_report_has_computed_verdicts_and_valid_figures(small_results):
    md, html = build_report(small_results)
    text = md.read_text()
    tables, _ = load_tables(small_results)
    results = evaluate_claims(tables)
    assert len(results) == len(CLAIMS)
    from uqkd.report.report import claims_summary

    paper = [r for r in results if not r.beyond and not r.code_check]
    assert f"Claims of the paper: {claims_summary(paper)}" in text
    assert " hold, " in text and " contradicted, " in text and " inconclusive, " in text and " errors (" in text
    ran = [r for r in results if set(r.experiments) <= set(tables)]
    assert ran and all(r.verdict in ("holds", "contradicted", "inconclusive") for r in ran)
    assert all(r.statistic and r.value for r in ran)
    for r in results:
        assert r.claim_id in text
    for sec in ("§4", "§5", "§7"):
        assert f"## {sec}" in text
    pngs = list(small_results.glob("*/*.png"))
    assert len(pngs) >= 4
    for p in pngs:
        assert p.read_bytes()[:8] == PNG
        assert f"({p.parent.name}/{p.name})" in text
    h = html.read_text()
    assert h.count("data:image/png;base64,") == len(pngs) and "<table" in h


def test_verdict_follows_the_numbers(small_results):
    tables, _ = load_tables(small_results)
    ok = {r.claim_id: r.verdict for r in evaluate_claims(tables)}
    assert ok["F2"] == "holds"
    # Break the 1/k law in the table: the verdict must flip.
    df = tables["variance-aware-linear"].copy()
    m = df["method"] == "averaging"
    df.loc[m, "inter_student_var"] = df.loc[m, "inter_student_var"] * df.loc[m, "k"] ** 0.5
    bad = {r.claim_id: r.verdict for r in evaluate_claims({**tables, "variance-aware-linear": df})}
    assert bad["F2"] == "contradicted"


def test_missing_experiments_are_not_run(small_results):
    results = evaluate_claims({})
    assert {r.verdict for r in results} == {"not run"}


def test_report_cli_and_errors(small_results, tmp_path, capsys):
    assert main(["report", str(small_results)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "results directory not found" in capsys.readouterr().err
    with pytest.raises(UserError, match="--only: unknown section or experiment '9'"):
        select_experiments(["9"])
    from uqkd.experiments import get_experiment

    four = select_experiments(["4"])
    assert "teacher-noise-linear" in four and all(get_experiment(n).section == "4" for n in four)


def test_every_claim_computes_a_verdict_from_minimal_tables(small_results, tmp_path):
    """Run the cheap MLP experiments at tiny sizes so every registered claim gets a computed verdict."""
    pytest.importorskip("torch")
    out = tmp_path / "mlp"
    tiny = {"n_students": 4, "n_epochs": 5}
    run_experiment("teacher-noise-mlp", out=out, progress=False, make_figures=False,
                   overrides={**tiny, "sigmas": (0.0, 0.5, 1.0)})
    run_experiment("init-noise-mlp", out=out, progress=False, make_figures=False,
                   overrides={**tiny, "sigma_inits": (0.0, 0.2), "hidden": (8,), "n_track_students": 2})
    run_experiment("bootstrap-mlp", out=out, progress=False, make_figures=False,
                   overrides={**tiny, "fractions": (0.5, 1.0), "hidden": (8,)})
    run_experiment("student-entropy", out=out, progress=False, make_figures=False,
                   overrides={**tiny, "datasets": ("wine", "breast_cancer"), "teacher_n_epochs": 5})
    run_experiment("variance-aware-mlp", out=out, progress=False, make_figures=False,
                   overrides={**tiny, "alphas": (0.5,), "ks": (1, 3, 9)})
    tables, _ = load_tables(small_results)
    tables.update(load_tables(out)[0])
    results = {r.claim_id: r for r in evaluate_claims(tables)}
    for cid, r in results.items():
        if set(r.experiments) <= set(tables):
            assert r.verdict in ("holds", "contradicted", "inconclusive"), (cid, r.verdict, r.statistic, r.value)


def _llm_va_table(single_mse_sd, gain, hallu_single, hallu_avg, n=5, n_eval=40):
    import pandas as pd

    base = {"k": 3, "n_students": n, "n_eval": n_eval, "intra_var_mean": 0.5}
    df = pd.DataFrame([
        {**base, "method": "teacher", "n_students": 1, "mse_mean": 1.0, "mse_std": 0.0, "inter_var": 0.0,
         "hallucination_mean": 0.3, "hallucination_std": 0.0},
        {**base, "method": "single", "mse_mean": 1.5, "mse_std": single_mse_sd, "inter_var": 0.6,
         "hallucination_mean": hallu_single, "hallucination_std": 0.05},
        {**base, "method": "averaging", "mse_mean": 1.5 - gain, "mse_std": single_mse_sd, "inter_var": 0.3,
         "hallucination_mean": hallu_avg, "hallucination_std": 0.05},
    ])
    df["inter_var_se"] = 0.1 * df["inter_var"]
    return df


def test_llm_claims_follow_the_numbers():
    clear = {r.claim_id: r for r in evaluate_claims({"llm-variance-aware": _llm_va_table(0.01, 0.2, 0.9, 0.4)})}
    assert clear["F5-llm"].verdict == "holds" and clear["B-llm-hallucination"].verdict == "holds"
    noisy = {r.claim_id: r for r in evaluate_claims({"llm-variance-aware": _llm_va_table(0.5, 0.05, 0.9, 0.85)})}
    assert noisy["F5-llm"].verdict == "inconclusive" and noisy["B-llm-hallucination"].verdict == "inconclusive"
    assert "MDE" in noisy["F5-llm"].verdict_text and "students/method, 80% power" in noisy["F5-llm"].verdict_text
