"""scripts/plot_analysis.py and scripts/study_report.py: the readers of `remoe analyze` JSON, the
report's derived numbers (sparsity after settling, domain divergence, rare vs common) on
hand-made inputs, both documents the report writes, and the drawing where matplotlib imports
(.venv-plot/bin/python first, as tests/scripts/plot_test.py), skipped otherwise.

Run from the source root: python3 tests/scripts/study_report_test.py
"""
import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"

if sys.version_info < (3, 11):
    print(f"study_report.py needs Python >= 3.11 (tomllib); this is {sys.version.split()[0]}: skipped")
    sys.exit(77)  # meson's "skipped"

# The scripts import each other by name from scripts/: so does this test, so that PlotError is
# one class.
sys.path.insert(0, str(SCRIPTS))
import plot  # noqa: E402
import plot_analysis  # noqa: E402
import run_summary  # noqa: E402
import study_report  # noqa: E402


def analysis(router="relu", E=4, L=2, usage=None, flip=0.1, step=30, buckets=None):
    """A remoe analyze document with two texts; usage[text][layer] defaults to uniform."""
    usage = usage or [[[1 / E] * E] * L, [[1 / E] * E] * L]
    buckets = buckets or [(0, ">= 1e-1", 5000, 1.0), (2, "1e-3..1e-2", 1200, 2.0), (4, "1e-5..1e-4", 10, 9.0)]

    def freq():
        return {"train_total": 100, "buckets": [
            {"bucket": b, "label": lab, "tokens": n, "active_experts": [a] * L, "active_experts_mean": a}
            for b, lab, n, a in buckets]}

    texts = [{"name": name, "tokens": 64, "sparsity": 0.75, "layer_sparsity": [0.75] * L,
              "active_experts": [1.0] * L, "tokens_without_expert": [0.0] * L,
              "expert_usage": usage[i], "max_share": [max(r) for r in usage[i]],
              "normalized_entropy": [1.0] * L, "frequency": {"byte": freq(), "pair": freq()}}
             for i, name in enumerate(["wiki", "code_c"])]
    return {"kind": "remoe-analyze", "version": 1, "checkpoint": "ck", "step": step,
            "model": {"router": router, "n_experts": E, "top_k": 1, "granularity": 1,
                      "moe_layers": L, "target_sparsity": 1 - 1 / E},
            "texts": texts,
            "compare": {"checkpoint": "ck0", "step": step - 10, "texts": [
                {"name": "wiki", "token_flip_rate": [flip] * L, "mask_flip_rate": [flip / 2] * L,
                 "mean_token_flip_rate": flip, "mean_mask_flip_rate": flip / 2}]}}


def write_run(d, router="relu", ffn="moe", steps=30, target=0.75):
    d.mkdir(parents=True)
    lines = []
    for s in range(1, steps + 1):
        sp = min(target, s / 10 * target) if s < 10 else target + (0.005 if s % 2 else -0.005)
        r = {"step": s, "loss": 3 - s / 100, "lambda": 1e-8 * 1.2 ** s, "sparsity": sp,
             "tokens_per_s": 100.0}
        if s % 10 == 0:
            r["val_loss"], r["val_bpb"] = 2.0, 2.0 / 0.6931471805599453
        lines.append(json.dumps(r))
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (d / "config.toml").write_text(
        f'[model]\nffn = "{ffn}"\nrouter = "{router}"\nn_experts = 4\ntop_k = 1\n'
        f'[train]\nsteps = {steps}\nbatch_size = 2\ngrad_accum = 2\nseq_len = 16\n')
    return d


class Readers(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def error(self, fn, *args):
        with self.assertRaises(plot.PlotError) as cm:
            fn(*args)
        return str(cm.exception)

    def test_analysis_documents_are_checked_and_named_after_their_file(self):
        p = self.dir / "analysis_remoe_e8.json"
        p.write_text(json.dumps(analysis()))
        doc = plot_analysis.read_analysis(p)
        self.assertEqual(doc["_name"], "remoe_e8")
        self.assertEqual(plot_analysis.analysis_name("x/other.json"), "other")
        p.write_text("{")
        self.assertIn("not JSON", self.error(plot_analysis.read_analysis, p))
        p.write_text(json.dumps({"kind": "something"}))
        self.assertIn("not a remoe analyze document", self.error(plot_analysis.read_analysis, p))
        bad = analysis()
        bad["texts"][1]["expert_usage"] = [[0.5, 0.5]] * 2
        p.write_text(json.dumps(bad))
        self.assertIn("texts[1] (code_c): \"expert_usage\" must be 2 × 4 numbers",
                      self.error(plot_analysis.read_analysis, p))
        self.assertIn("not found", self.error(plot_analysis.read_analysis, self.dir / "missing.json"))
        self.assertIn("no text named 'po' (it has wiki, code_c)",
                      self.error(plot_analysis.text_of, doc, "po"))

    def test_bucket_curve_keeps_populated_buckets_with_enough_tokens(self):
        t = analysis()["texts"][0]
        self.assertEqual([p[0] for p in plot_analysis.bucket_curve(t, "byte")], [0, 2, 4])
        self.assertEqual([p[0] for p in plot_analysis.bucket_curve(t, "byte", 1000)], [0, 2])
        # Rare vs common over buckets of ≥ 1000 tokens: 2.0 experts at 1e-3..1e-2, 1.0 at ≥ 1e-1.
        self.assertEqual(study_report.rare_common(analysis()), (">= 1e-1", 1.0, "1e-3..1e-2", 2.0))

    def test_domain_divergence_is_zero_for_alike_texts_and_half_for_two_disjoint_ones(self):
        self.assertEqual(study_report.domain_divergence(analysis()), [0.0, 0.0])
        one_hot = [[[1, 0, 0, 0]] * 2, [[0, 1, 0, 0]] * 2]
        self.assertEqual(study_report.domain_divergence(analysis(usage=one_hot)), [0.5, 0.5])

    def test_sparsity_settles_at_the_first_step_within_the_tolerance(self):
        records = [{"step": s, "sparsity": v} for s, v in
                   [(1, 0.0), (2, 0.5), (3, 0.745), (4, 0.76), (5, 0.74), (6, 0.75)]]
        s = study_report.sparsity_summary(records, 0.75)
        self.assertEqual(s["settle_step"], 3)
        a = s["after_settle"]
        self.assertEqual(a["steps"], 4)
        self.assertAlmostEqual(a["mean"], (0.745 + 0.76 + 0.74 + 0.75) / 4)
        self.assertAlmostEqual(a["max_abs_dev"], 0.01)
        self.assertEqual(a["within_tol"], 1.0)
        self.assertIsNone(s["from_step_100"])
        never = study_report.sparsity_summary([{"step": 1, "sparsity": 0.1}], 0.75)
        self.assertIsNone(never["settle_step"])
        self.assertIsNone(never["after_settle"])

    def test_run_summary_reads_losses_sparsity_and_the_router_metrics(self):
        d = write_run(self.dir / "r", steps=30, target=0.75)
        # The last step also logs what the TopK options add.
        lines = (d / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1])
        last.update(expert_load=[[0.5, 0.25, 0.25, 0.0]], dropped_fraction=[0.1], z_loss=0.02,
                    router_bias=[[0.003, -0.001, 0.0, -0.002]])
        lines[-1] = json.dumps(last)
        (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        got = run_summary.summarize(d, 0.02)
        self.assertEqual((got["steps"], got["loss_first"], got["loss_last"]), (30, 2.99, 2.7))
        self.assertEqual(got["val_loss"], [[10, 2.0], [20, 2.0], [30, 2.0]])
        self.assertEqual(got["sparsity"]["target"], 0.75)
        self.assertEqual(got["sparsity"]["tolerance"], 0.02)
        self.assertEqual(got["sparsity"]["settle_step"], 10)  # step 9 logs 0.675
        self.assertEqual(got["expert_load_last"], {"max": 0.5, "min": 0.0})
        self.assertEqual(got["dropped_fraction_mean"], 0.1)
        self.assertEqual(got["z_loss_last"], 0.02)
        self.assertEqual(got["router_bias_last"], {"max": 0.003, "min": -0.002})
        self.assertIn("not a directory", self.error(run_summary.summarize, self.dir / "none", 0.02))

    def test_dry_run_parameters_are_read(self):
        p = self.dir / "dryrun_x.txt"
        p.write_text("parameters: 208 M total, 31.8 M active per token\n")
        self.assertEqual(study_report.read_params(p), (208e6, 31.8e6))
        p.write_text("nothing\n")
        self.assertIn("no 'parameters: N total, N active' line", self.error(study_report.read_params, p))


class Documents(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.results = self.dir / "results"
        self.results.mkdir()

    def tearDown(self):
        self.tmp.cleanup()

    def report(self, *args):
        out = self.dir / "REPRODUCTION.md"
        rc = study_report.main(["--results", str(self.results), "--out", str(out), *args])
        self.assertEqual(rc, 0)
        return out.read_text()

    def test_without_results_the_document_says_the_study_has_not_run(self):
        (self.results / "commands.txt").write_text("# planned\nremoe train --config configs/study/dense.toml\n")
        text = self.report()
        self.assertIn("the study has not been run yet", text)
        self.assertIn("remoe train --config configs/study/dense.toml", text)
        self.assertNotIn("| val bpb |", text)

    def test_results_become_tables_and_plain_answers(self):
        runs = []
        for name, router in (("topk_e8", "topk"), ("remoe_e8", "relu"), ("topk_e32", "topk"), ("remoe_e32", "relu")):
            runs.append(str(write_run(self.dir / "runs" / name, router)))
            bpb = {"topk_e8": 2.30, "remoe_e8": 2.25, "topk_e32": 2.20, "remoe_e32": 2.10}[name]
            for split, delta in (("val", 0.0), ("test", 0.01)):
                (self.results / f"eval_{name}_{split}.json").write_text(json.dumps({"bpb": bpb + delta, "loss": 1.0}))
            (self.results / f"dryrun_{name}.txt").write_text("parameters: 208 M total, 31.8 M active per token\n")
            usage = ([[[1, 0, 0, 0]] * 2, [[0, 1, 0, 0]] * 2] if router == "relu" else None)
            (self.results / f"analysis_{name}.json").write_text(json.dumps(analysis(router=router, usage=usage)))
        flips = Path(runs[1]) / "flips"
        flips.mkdir()
        (flips / "step_00000030.json").write_text(json.dumps(analysis(flip=0.25)))
        text = self.report("--runs", *runs)
        study = json.loads((self.results / "study.json").read_text())
        self.assertEqual(study["runs"]["remoe_e8"]["sparsity"]["settle_step"], 10)
        self.assertEqual(study["runs"]["remoe_e8"]["flips"][0]["mean_token_flip_rate"], 0.25)
        self.assertNotIn("sparsity", study["runs"]["topk_e8"])  # no λ: no settling to report
        self.assertIn("| `remoe_e8` | ReMoE E=4 k=1 | 31.8M | 208.0M | 1,920 | 2.2500 | 2.2600 |", text)
        self.assertIn("E = 8: ReMoE's validation bpb beats TopK's**: 2.2500 vs 2.3000", text)
        self.assertIn("The gap grows at E = 32**: +0.1000 bits/byte at E = 32 against +0.0500", text)
        self.assertIn("remoe_e8: sparsity holds 1 − k/E = 0.7500 within ±0.01** after step 10", text)
        self.assertIn("remoe_e8: rare bytes get more experts** than common ones", text)
        self.assertIn("E8: domains specialise more under ReMoE** than under TopK: domain divergence "
                      "(mean over layers) 0.500 vs 0.000", text)
        self.assertIn("(reproduction/domains_remoe_e8.png)", text)
        # Regenerating from the committed JSON alone gives the same document.
        self.assertEqual(self.report(), text)

    def test_a_bad_eval_file_is_an_error_naming_it(self):
        write_run(self.dir / "runs" / "remoe_e8")
        (self.results / "eval_remoe_e8_val.json").write_text("[]")
        out = self.dir / "R.md"
        rc = study_report.main(["--runs", str(self.dir / "runs" / "remoe_e8"), "--results",
                                str(self.results), "--out", str(out)])
        self.assertEqual(rc, 1)
        self.assertFalse(out.exists())


def plotting_python():
    venv = ROOT / ".venv-plot" / "bin" / "python"
    python = str(venv) if venv.exists() else sys.executable
    ok = subprocess.run([python, "-c", "import matplotlib"], capture_output=True).returncode == 0
    return python if ok else None


PYTHON = plotting_python()


@unittest.skipIf(PYTHON is None, "matplotlib not importable (see scripts/requirements-plot.txt)")
class Drawing(unittest.TestCase):
    def test_writes_every_plot_as_png(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            for name, router in (("topk_e8", "topk"), ("remoe_e8", "relu")):
                (d / f"analysis_{name}.json").write_text(json.dumps(analysis(router=router)))
            run = write_run(d / "runs" / "remoe_e8")
            out = d / "png"
            r = subprocess.run([PYTHON, str(SCRIPTS / "plot_analysis.py"), str(d / "analysis_topk_e8.json"),
                                str(d / "analysis_remoe_e8.json"), "--runs", str(run), "--first", "20",
                                "--text", "wiki", "--out", str(out)], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            for png in ("domains_topk_e8.png", "domains_remoe_e8.png", "rare_vs_common.png",
                        "layer_sparsity.png", "flip_rate.png", "stages.png"):
                self.assertEqual((out / png).read_bytes()[:8], b"\x89PNG\r\n\x1a\n", png)
            r = subprocess.run([PYTHON, str(SCRIPTS / "plot_analysis.py"), str(d / "analysis_topk_e8.json"),
                                "--text", "po", "--out", str(out)], capture_output=True, text=True)
            self.assertEqual(r.returncode, 1)
            self.assertIn("no text named 'po'", r.stderr)


if __name__ == "__main__":
    print(f"drawing with: {PYTHON or 'nothing (matplotlib not importable): skipped'}")
    unittest.main()
