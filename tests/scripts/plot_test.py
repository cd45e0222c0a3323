"""scripts/plot.py: its readers (metrics.jsonl, config.toml, the expert-load average) always; its
drawing only where matplotlib imports — in .venv-plot/bin/python when that exists (the README's
set-up), else in this interpreter — and skipped otherwise.

Run from the source root: python3 tests/scripts/plot_test.py
"""
import contextlib
import importlib.util
import io
import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLOT = ROOT / "scripts" / "plot.py"

if sys.version_info < (3, 11):
    print(f"plot.py needs Python >= 3.11 (tomllib); this is {sys.version.split()[0]}: skipped")
    sys.exit(77)  # meson's "skipped"

spec = importlib.util.spec_from_file_location("plot", PLOT)
plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)

CONFIG = """[model]
ffn = "moe"
router = "relu"
n_experts = 4
top_k = 1
granularity = {g}
"""


def write_run(directory, steps=20, layers=2, experts=4, g=1, ffn="moe"):
    """A run directory like the trainer's: step s has loss 5 − s/10, expert e of layer l a load
    proportional to (e + 1)·s + l, validation every 10 steps."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for s in range(1, steps + 1):
        r = {"step": s, "loss": 5 - s / 10, "aux": 0.0, "lr": 1e-3, "lambda": 1e-8 * 1.2 ** s,
             "sparsity": min(s / steps, 0.75), "grad_norm": 1.0, "tokens_per_s": 100.0}
        if ffn == "moe":
            r["layer_sparsity"] = [min(s / steps, 0.75)] * layers
            load = []
            for l in range(layers):
                row = [(e + 1) * s + l for e in range(experts * g)]
                load.append([v / sum(row) for v in row])
            r["expert_load"] = load
        if s % 10 == 0:
            r["val_loss"], r["val_bpb"] = 4.0, 4.0 / 0.6931471805599453
        lines.append(json.dumps(r))
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (d / "config.toml").write_text(CONFIG.format(g=g).replace('"moe"', f'"{ffn}"'))
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

    def test_reads_every_step_in_order(self):
        run = write_run(self.dir / "a", steps=12)
        records = plot.read_metrics(run / "metrics.jsonl")
        self.assertEqual([r["step"] for r in records], list(range(1, 13)))
        self.assertAlmostEqual(records[4]["loss"], 4.5)

    def test_a_bad_line_is_an_error_naming_file_and_line(self):
        p = self.dir / "metrics.jsonl"
        p.write_text('{"step": 1, "loss": 2}\n{"step": 2, "loss": \n{"step": 3, "loss": 2}\n')
        self.assertIn(f"{p}:2: not JSON", self.error(plot.read_metrics, p))
        p.write_text('{"step": 1, "loss": 2}\n{"step": 2}\n')
        self.assertIn(f"{p}:2: 'loss' must be a number, got None", self.error(plot.read_metrics, p))
        p.write_text('[1, 2]\n')
        self.assertIn(f"{p}:1: expected a JSON object, got list", self.error(plot.read_metrics, p))
        p.write_text("\n\n")
        self.assertIn("no steps logged yet", self.error(plot.read_metrics, p))
        self.assertIn("not found (is this a remoe run directory?)",
                      self.error(plot.read_metrics, self.dir / "missing.jsonl"))

    def test_a_cut_off_last_line_is_dropped_with_a_warning(self):
        p = self.dir / "metrics.jsonl"
        p.write_text('{"step": 1, "loss": 2}\n{"step": 2, "loss": 1}\n{"step": 3, "lo')
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            records = plot.read_metrics(p)
        self.assertEqual([r["step"] for r in records], [1, 2])
        self.assertIn(f"{p}:3: ignoring an incomplete last line", err.getvalue())

    def test_target_sparsity_is_one_minus_k_over_e_with_granularity(self):
        self.assertEqual(plot.target_sparsity({"model": {"n_experts": 8, "top_k": 1}}), 0.875)
        self.assertEqual(plot.target_sparsity({"model": {"n_experts": 8, "top_k": 2,
                                                          "granularity": 4}}), 0.75)
        self.assertEqual(plot.target_sparsity({"model": {}}), 0.875)  # the trainer's defaults
        self.assertIsNone(plot.target_sparsity(None))
        self.assertIn("model.n_experts = 0: expected a positive integer",
                      self.error(plot.target_sparsity, {"model": {"n_experts": 0}}, "c.toml"))
        self.assertIn("model.top_k = 9 exceeds model.n_experts = 8",
                      self.error(plot.target_sparsity, {"model": {"n_experts": 8, "top_k": 9}}))

    def test_expert_load_is_averaged_over_the_last_tenth_of_steps(self):
        records = plot.read_metrics(write_run(self.dir / "a", steps=20) / "metrics.jsonl")
        mean, first, last = plot.mean_expert_load(records, 0.1)
        self.assertEqual((first, last), (19, 20))
        # layer 1, expert 3 at step s: (4s + 1) / (10s + 4)
        expected = ((4 * 19 + 1) / (10 * 19 + 4) + (4 * 20 + 1) / (10 * 20 + 4)) / 2
        self.assertAlmostEqual(mean[1][3], expected, places=12)
        self.assertEqual((len(mean), len(mean[0])), (2, 4))
        self.assertEqual(plot.mean_expert_load(records, 0.01)[1:], (20, 20))  # at least one step
        self.assertIsNone(plot.mean_expert_load([{"step": 1, "loss": 1.0}]))

    def test_expert_load_of_changing_shape_is_an_error(self):
        records = [{"step": 1, "expert_load": [[0.5, 0.5]]},
                   {"step": 2, "expert_load": [[0.5, 0.25, 0.25]]}]
        self.assertIn("step 2: expert_load is 1×3, earlier steps 1×2",
                      self.error(plot.mean_expert_load, records, 1.0, "m.jsonl"))
        self.assertIn("step 1: expert_load must be",
                      self.error(plot.mean_expert_load, [{"step": 1, "expert_load": [[1], [1, 2]]}]))

    def test_runs_are_named_by_directory_and_told_apart_by_path(self):
        self.assertEqual(plot.run_names(["runs/a", "runs/b/"]), ["a", "b"])
        self.assertEqual(plot.run_names(["x/tiny", "y/tiny"]), ["x/tiny", "y/tiny"])
        self.assertEqual(plot.file_stem("x/tiny run"), "x_tiny_run")

    def test_a_missing_run_fails_before_plotting(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = plot.main([str(self.dir / "nope"), "--out", str(self.dir / "out")])
        self.assertEqual(status, 1)
        self.assertIn(f"plot.py: error: {self.dir / 'nope'}: not a directory", err.getvalue())
        self.assertFalse((self.dir / "out").exists())


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
            tmp = Path(tmp)
            runs = [write_run(tmp / "relu"), write_run(tmp / "fine", g=2),
                    write_run(tmp / "dense", ffn="dense")]
            out = tmp / "plots"
            p = subprocess.run([PYTHON, str(PLOT), *map(str, runs), "--out", str(out)],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            expected = {"loss.png", "router.png", "expert_load_relu.png", "layer_sparsity_relu.png",
                        "expert_load_fine.png", "layer_sparsity_fine.png"}  # none for dense
            self.assertEqual({f.name for f in out.iterdir()}, expected)
            for name in expected:
                data = (out / name).read_bytes()
                self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n", name)
                width = int.from_bytes(data[16:20], "big")
                height = int.from_bytes(data[20:24], "big")
                self.assertGreater(width, 300, name)
                self.assertGreater(height, 150, name)
            # The 8-expert run's heatmap is wider than the 4-expert one's.
            w = {n: int.from_bytes((out / n).read_bytes()[16:20], "big")
                 for n in ("expert_load_relu.png", "expert_load_fine.png")}
            self.assertGreater(w["expert_load_fine.png"], w["expert_load_relu.png"])


if __name__ == "__main__":
    print(f"drawing with: {PYTHON or 'nothing (matplotlib not importable): skipped'}")
    unittest.main(verbosity=2)
