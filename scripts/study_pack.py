#!/usr/bin/env python3
"""Packs of study runs: what scripts/reproduce.sh needs of a run to write the report, in one
file per run, to carry off a machine that keeps nothing (the lent GPU machine returns a few
files from each call and is wiped between sessions) and to unpack on another.

    scripts/study_pack.py pack --out DIR [--runs-dir runs/study] [--results docs/reproduction] NAME ...
    scripts/study_pack.py unpack FILE ...

pack writes DIR/study_NAME.tar.xz for each run NAME, holding (paths as given, relative to the
current directory, which unpack restores):
  RUNS_DIR/NAME/config.toml, RUNS_DIR/NAME/metrics.jsonl, RUNS_DIR/NAME/flips/*.json
  RESULTS/eval_NAME_val.json, eval_NAME_test.json, analysis_NAME.json, dryrun_NAME.txt
    (those that exist: a dense run has no analysis, and eval may not have run yet).
metrics.jsonl is thinned to keep a pack small: `expert_load` (layers × experts numbers, most of
a line's bytes at E = 32) stays on every THIN-th step (default 10) and the last one, so the
plot of the mean load over the last steps averages every tenth of them; every other field of
every step is kept as written.

unpack extracts packs into the current directory, refusing members with absolute paths or '..'
and anything but plain files and folders. Exit status 0, or 1 with a line naming the file and
what is wrong; nothing is written for a run whose metrics.jsonl is missing.
"""
import argparse
import io
import json
import sys
import tarfile
from pathlib import Path, PurePosixPath


class PackError(Exception):
    pass


def thin_metrics(text, every, source):
    """metrics.jsonl text with expert_load dropped except on steps divisible by `every` and on
    the last line; lines are re-serialised only where something is dropped."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1 and not text.endswith("\n"):
                break  # a run killed mid-write: plot.py drops that line too
            raise PackError(f"{source}:{i + 1}: not JSON ({e.msg})") from None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int):
            raise PackError(f"{source}:{i + 1}: expected an object with an integer 'step'")
        if "expert_load" in record and step % every != 0 and i != len(lines) - 1:
            del record["expert_load"]
            line = json.dumps(record, separators=(",", ":"))
        out.append(line)
    return "".join(ln + "\n" for ln in out)


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def pack(name, runs_dir, results, out_dir, every):
    run = runs_dir / name
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise PackError(f"{metrics}: not found (train the run first)")
    members = [run / "config.toml", *sorted((run / "flips").glob("*.json"))]
    members += [results / f for f in (f"eval_{name}_val.json", f"eval_{name}_test.json",
                                      f"analysis_{name}.json", f"dryrun_{name}.txt")]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"study_{name}.tar.xz"
    tmp = target.with_name(target.name + ".tmp")
    try:
        with tarfile.open(tmp, "w:xz") as tar:
            text = metrics.read_text(encoding="utf-8")
            add_bytes(tar, metrics.as_posix(), thin_metrics(text, every, metrics).encode())
            for m in members:
                if m.is_file():
                    add_bytes(tar, m.as_posix(), m.read_bytes())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)
    return target


def safe_members(tar, source):
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts:
            raise PackError(f"{source}: member '{m.name}' leaves the current directory")
        if not (m.isfile() or m.isdir()):
            raise PackError(f"{source}: member '{m.name}' is not a plain file or folder")
    return tar.getmembers()


def unpack(path):
    try:
        with tarfile.open(path, "r:xz") as tar:
            members = safe_members(tar, path)
            # Python's own member checks too, where it has them (3.12, and 3.11.4 on).
            checks = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(".", members=members, **checks)
            return [m.name for m in members if m.isfile()]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise PackError(f"{path}: not a readable .tar.xz ({e})") from None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("names", nargs="+")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--runs-dir", default=Path("runs/study"), type=Path)
    p.add_argument("--results", default=Path("docs/reproduction"), type=Path)
    p.add_argument("--thin", default=10, type=int, help="keep expert_load on every THIN-th step")
    u = sub.add_parser("unpack")
    u.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "pack":
            if args.thin < 1:
                raise PackError(f"--thin must be at least 1, got {args.thin}")
            for n in args.names:
                t = pack(n, args.runs_dir, args.results, args.out, args.thin)
                print(f"study_pack.py: {t} ({t.stat().st_size / 1e6:.2f} MB)")
        else:
            for f in args.files:
                names = unpack(f)
                print(f"study_pack.py: {f}: {len(names)} files")
    except PackError as e:
        print(f"study_pack.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
