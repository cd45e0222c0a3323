"""The PyTorch peer (bench/peer/) against remoe, on the CPU in f32: the same validation loss and
routing from the same checkpoint, the same training steps from the same checkpoint (loss, λ,
sparsity, final weights), and the peer's refusals of what it does not implement.

Runs in .venv-peer/bin/python (scripts/setup_peer.sh) when this interpreter has no torch;
skipped (77) when neither has it. Needs REMOE_BIN (the remoe binary; meson sets it) and
../shared/data. Run from the source root: python3 tests/peer/peer_test.py
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEER = ROOT / "bench" / "peer"
VENV_PYTHON = ROOT / ".venv-peer" / "bin" / "python"

try:
    import torch  # noqa: F401
    import safetensors  # noqa: F401
except ImportError:
    # NOTE: a venv's python is a symlink to the system's: tell the re-run by the environment.
    if VENV_PYTHON.exists() and not os.environ.get("REMOE_PEER_REEXEC"):
        os.environ["REMOE_PEER_REEXEC"] = "1"
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    print("no torch here nor in .venv-peer (scripts/setup_peer.sh installs it): skipped")
    sys.exit(77)

sys.path.insert(0, str(PEER))
import check_equivalence  # noqa: E402
from remoe_peer import config as config_mod  # noqa: E402

REMOE = os.environ.get("REMOE_BIN", str(ROOT / "build" / "train" / "remoe"))
TINY = "configs/tiny.toml"


def resolved(*overrides):
    """configs/tiny.toml resolved by remoe itself (--print-config), with KEY VALUE overrides."""
    return subprocess.run([REMOE, "train", "--config", TINY, *overrides, "--print-config"],
                          check=True, capture_output=True, text=True, cwd=ROOT).stdout


class Equivalence(unittest.TestCase):
    def check(self, steps, *sets, expect):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "report.json")
            args = ["--remoe", REMOE, "--config", TINY, "--steps", str(steps), "--out", out]
            for s in sets:
                args += ["--set", s]
            with contextlib.redirect_stdout(io.StringIO()):  # the report, read from --out below
                status = check_equivalence.main(args)
            report = json.loads(Path(out).read_text())
        names = [c["check"].split(" (")[0] for c in report["checks"]]
        self.assertEqual(names, expect)
        for c in report["checks"]:
            self.assertLessEqual(c["value"], c["tolerance"], c["check"])
        self.assertTrue(report["ok"])
        self.assertEqual(status, 0)
        return report

    def test_remoe_relu_routing_through_stage_two(self):
        report = self.check(40, expect=[
            "eval loss", "eval layer sparsity", "eval expert load", "train loss per step",
            "train sparsity per step", "λ per step", "weights after step 40"])
        # f32 on the CPU agrees to rounding, not merely to the tolerance.
        by_name = {c["check"].split(" (")[0]: c["value"] for c in report["checks"]}
        self.assertLess(by_name["train loss per step"], 1e-6)
        self.assertEqual(by_name["λ per step"], 0.0)

    def test_renormalised_topk_with_granularity_and_accumulation(self):
        self.check(12, "model.router=topk", "model.top_k=2", "model.renormalize=true",
                   "model.granularity=2", "train.grad_accum=2", expect=[
                       "eval loss", "eval layer sparsity", "eval expert load",
                       "train loss per step", "train sparsity per step", "weights after step 12"])

    def test_plain_l1_and_dense(self):
        self.check(8, "model.l1=plain", expect=[
            "eval loss", "eval layer sparsity", "eval expert load", "train loss per step",
            "train sparsity per step", "λ per step", "weights after step 8"])
        self.check(8, "model.ffn=dense", expect=["eval loss", "train loss per step", "weights after step 8"])


class Sensitivity(unittest.TestCase):
    def test_a_slightly_different_model_is_caught(self):
        """The comparison can fail: one output weight moved by 1e-2 moves the loss beyond the
        f32 tolerance."""
        from remoe_peer.checkpoint import Checkpoint
        from remoe_peer.train import PeerTrainer
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([REMOE, "train", "--config", TINY, "--train.steps", "4", "--eval.every", "0",
                            "--log.run_dir", tmp, "--train.device", "cpu"],
                           check=True, capture_output=True, cwd=ROOT)
            theirs = json.loads(subprocess.run([REMOE, "eval", "--checkpoint", tmp, "--json"], check=True,
                                               capture_output=True, text=True, cwd=ROOT).stdout)
            ck = Checkpoint(tmp)
            trainer = PeerTrainer(ck.config, "cpu", "f32", checkpoint=ck)
            same = trainer.evaluate(theirs["batches"])["loss"]
            self.assertLessEqual(check_equivalence.rel(theirs["loss"], same), 1e-5)
            with torch.no_grad():
                trainer.model.output[ord("e"), 0] += 1e-2
            moved = trainer.evaluate(theirs["batches"])["loss"]
            self.assertGreater(check_equivalence.rel(theirs["loss"], moved),
                               check_equivalence.TOLERANCES["f32"]["loss"])


class Refusals(unittest.TestCase):
    def assert_refused(self, text, *needles):
        with self.assertRaises(config_mod.ConfigError) as e:
            config_mod.parse(text, "cfg.toml")
        for n in ("cfg.toml", *needles):
            self.assertIn(n, str(e.exception))

    def test_unsupported_options_name_the_key(self):
        self.assert_refused(resolved("--model.router", "expert_choice"), "[model] router", "expert_choice")
        self.assert_refused(resolved("--model.capacity_factor", "1.25", "--model.router", "topk"),
                            "[model] capacity_factor = 1.25", "capacity dropping")
        self.assert_refused(resolved("--model.z_loss_coeff", "0.001"), "z_loss_coeff")
        self.assert_refused(resolved("--dist.expert_parallel", "2"), "expert_parallel")

    def test_an_unresolved_config_names_the_missing_key(self):
        self.assert_refused(Path(ROOT / TINY).read_text(), "[model] vocab_size is missing", "--print-config")
        self.assert_refused("[model\n", "not valid TOML")

    def test_the_resolved_tiny_config_reads(self):
        c = config_mod.parse(resolved(), "tiny")
        self.assertEqual((c.d_model, c.experts, c.active_experts, c.router), (64, 8, 1, "relu"))
        self.assertAlmostEqual(c.target_sparsity, 0.875)


class Cli(unittest.TestCase):
    def test_train_from_a_resolved_config_writes_remoe_style_metrics(self):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "tiny.toml"
            cfg.write_text(resolved())
            metrics = Path(tmp) / "metrics.jsonl"
            p = subprocess.run([sys.executable, str(PEER / "peer.py"), "train", "--config", str(cfg),
                                "--steps", "6", "--device", "cpu", "--metrics", str(metrics)],
                               capture_output=True, text=True, cwd=ROOT)
            self.assertEqual(p.returncode, 0, p.stderr)
            summary = json.loads(p.stdout)
            self.assertEqual((summary["final_step"], summary["router"], summary["precision"]), (6, "relu", "f32"))
            self.assertGreater(summary["tokens_per_s"], 0)
            self.assertEqual(summary["n_params"], 451904)  # remoe's count for tiny (`remoe info`)
            lines = [json.loads(x) for x in metrics.read_text().splitlines()]
            self.assertEqual([r["step"] for r in lines], [1, 2, 3, 4, 5, 6])
            self.assertLess(lines[-1]["loss"], lines[0]["loss"])
            self.assertEqual(len(lines[0]["layer_sparsity"]), 2)
            self.assertAlmostEqual(sum(lines[0]["expert_load"][0]), 1.0, places=9)

    def test_bad_arguments_are_errors(self):
        p = subprocess.run([sys.executable, str(PEER / "peer.py"), "train"], capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("exactly one of --config", p.stderr)
        p = subprocess.run([sys.executable, str(PEER / "peer.py"), "eval", "--checkpoint", "/nonexistent"],
                           capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("/nonexistent is neither a checkpoint", p.stderr)


if __name__ == "__main__":
    os.chdir(ROOT)
    unittest.main(verbosity=2)
