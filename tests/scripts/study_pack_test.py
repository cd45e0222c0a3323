"""scripts/study_pack.py: a run packed on one machine unpacks on another as the report needs it
(config, flips, results files byte for byte), metrics.jsonl thinned only in expert_load, and
packs that would write outside the current directory refused.

Run from the source root: python3 tests/scripts/study_pack_test.py
"""
import io
import json
import os
import sys
import tarfile
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import study_pack  # noqa: E402


def run_quiet(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = study_pack.main(argv)
    return rc, out.getvalue() + err.getvalue()


class StudyPack(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.cwd = os.getcwd()
        self.addCleanup(os.chdir, self.cwd)
        os.chdir(self.tmp.name)

    def make_run(self, name="remoe_e8", steps=25):
        run = Path("runs/study") / name
        (run / "flips").mkdir(parents=True)
        (run / "config.toml").write_text("[model]\nrouter = \"relu\"\n")
        (run / "flips" / "step_00000020.json").write_text('{"kind": "remoe-analyze"}')
        (run / "checkpoints").mkdir()  # not packed
        (run / "checkpoints" / "big.safetensors").write_bytes(b"\0" * 1000)
        records = [{"step": s, "loss": 3.0 - s / 100, "sparsity": 0.5,
                    "expert_load": [[0.25, 0.75]]} for s in range(1, steps + 1)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        results = Path("docs/reproduction")
        results.mkdir(parents=True)
        (results / f"eval_{name}_val.json").write_text('{"bpb": 1.5}')
        (results / f"dryrun_{name}.txt").write_text("parameters: 208M total, 31.8M active\n")
        return records

    def test_pack_then_unpack_restores_what_the_report_reads(self):
        records = self.make_run()
        rc, out = run_quiet(["pack", "--out", "packs", "remoe_e8"])
        self.assertEqual(rc, 0, out)
        pack = Path("packs/study_remoe_e8.tar.xz")
        with tarfile.open(pack) as tar:
            names = sorted(tar.getnames())
        self.assertEqual(names, ["docs/reproduction/dryrun_remoe_e8.txt",
                                 "docs/reproduction/eval_remoe_e8_val.json",
                                 "runs/study/remoe_e8/config.toml",
                                 "runs/study/remoe_e8/flips/step_00000020.json",
                                 "runs/study/remoe_e8/metrics.jsonl"])
        # On another machine: an empty directory.
        other = Path(self.tmp.name) / "elsewhere"
        other.mkdir()
        os.chdir(other)
        rc, out = run_quiet(["unpack", str(Path(self.tmp.name) / pack)])
        self.assertEqual(rc, 0, out)
        self.assertEqual(Path("docs/reproduction/eval_remoe_e8_val.json").read_text(), '{"bpb": 1.5}')
        self.assertEqual(Path("runs/study/remoe_e8/config.toml").read_text(), "[model]\nrouter = \"relu\"\n")
        got = [json.loads(ln) for ln in Path("runs/study/remoe_e8/metrics.jsonl").read_text().splitlines()]
        self.assertEqual(len(got), len(records), "every step is kept")
        for g, r in zip(got, records):
            keep = r["step"] % 10 == 0 or r["step"] == records[-1]["step"]
            self.assertEqual("expert_load" in g, keep, g["step"])
            r = dict(r)
            if not keep:
                del r["expert_load"]
            self.assertEqual(g, r, "nothing else changes")

    def test_a_missing_run_is_an_error_naming_it(self):
        rc, out = run_quiet(["pack", "--out", "packs", "topk_e32"])
        self.assertEqual(rc, 1)
        self.assertIn("runs/study/topk_e32/metrics.jsonl: not found", out)
        self.assertFalse(Path("packs/study_topk_e32.tar.xz").exists())

    def test_a_bad_metrics_line_is_an_error_and_a_cut_off_last_line_is_dropped(self):
        self.make_run()
        m = Path("runs/study/remoe_e8/metrics.jsonl")
        good = m.read_text()
        m.write_text(good + '{"step": 26, "loss"')  # killed mid-write
        self.assertEqual(run_quiet(["pack", "--out", "packs", "remoe_e8"])[0], 0)
        with tarfile.open("packs/study_remoe_e8.tar.xz") as tar:
            text = tar.extractfile("runs/study/remoe_e8/metrics.jsonl").read().decode()
        self.assertEqual(len(text.splitlines()), 25)
        m.write_text('{"step": 1}\nnot json\n' + good)
        rc, out = run_quiet(["pack", "--out", "packs", "remoe_e8"])
        self.assertEqual(rc, 1)
        self.assertIn("metrics.jsonl:2: not JSON", out)
        self.assertEqual(sorted(p.name for p in Path("packs").iterdir()), ["study_remoe_e8.tar.xz"],
                         "no half-written pack is left behind")

    def test_members_outside_the_current_directory_are_refused(self):
        with tarfile.open("evil.tar.xz", "w:xz") as tar:
            study_pack.add_bytes(tar, "../outside.txt", b"x")
        rc, out = run_quiet(["unpack", "evil.tar.xz"])
        self.assertEqual(rc, 1)
        self.assertIn("member '../outside.txt' leaves the current directory", out)
        self.assertFalse((Path(self.tmp.name).parent / "outside.txt").exists())
        Path("junk.tar.xz").write_bytes(b"not a tar")
        rc, out = run_quiet(["unpack", "junk.tar.xz"])
        self.assertEqual(rc, 1)
        self.assertIn("junk.tar.xz: not a readable .tar.xz", out)


if __name__ == "__main__":
    unittest.main()
