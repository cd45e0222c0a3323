#!/usr/bin/env python3
"""The docs name real code: every repository path and every `path:symbol` in a code span of
docs/*.md and the README must exist (the symbol as a whole word in that file). Run by the cpu
suite from the source root; exits non-zero listing each stale reference."""
import fnmatch
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Folders .gitignore names as "/name/" (runs/, build*/) are outputs: a doc may show a path in
# them (`runs/tiny/metrics.jsonl`) that exists only after a command has run.
IGNORED = [ln.strip().strip("/") for ln in (ROOT / ".gitignore").read_text().splitlines()
           if ln.strip().startswith("/") and ln.strip().endswith("/")]
TOP = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
       and not any(fnmatch.fnmatch(p.name, g) for g in IGNORED)}
SPAN = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-<>]*)+$")


def references(text):
    """(path, symbol or None) for each code span that names a file or folder of the repo."""
    for span in SPAN.findall(text):
        path, _, symbol = span.partition(":")
        if "<" in path or not PATH.match(path) or path.split("/")[0] not in TOP:
            continue
        yield path, symbol or None


def check(doc):
    problems = []
    for path, symbol in references(doc.read_text(encoding="utf-8")):
        target = ROOT / path
        if not target.exists():
            problems.append(f"{doc.relative_to(ROOT)}: `{path}` does not exist")
        elif symbol:
            if not target.is_file():
                problems.append(f"{doc.relative_to(ROOT)}: `{path}:{symbol}` names a folder")
                continue
            code = target.read_text(encoding="utf-8", errors="replace")
            for part in symbol.split("::"):
                if not re.search(r"(?<![A-Za-z0-9_])" + re.escape(part) + r"(?![A-Za-z0-9_])", code):
                    problems.append(f"{doc.relative_to(ROOT)}: `{part}` is not in {path}")
    return problems


def main():
    docs = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    problems, refs = [], 0
    for doc in docs:
        refs += sum(1 for _ in references(doc.read_text(encoding="utf-8")))
        problems += check(doc)
    # A checker that finds nothing to check proves nothing.
    if refs < 20:
        problems.append(f"only {refs} references found in {len(docs)} documents: is the pattern right?")
    for p in problems:
        print(p)
    print(f"docs: {refs} references in {len(docs)} documents, {len(problems)} stale")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
