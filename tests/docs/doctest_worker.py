"""Run every docstring example of retrieval_kit; print one JSON line per docstring.

Run in a fresh process (by ``test_docstring_examples.py``) so that what the examples register
(a loss, a backbone), seed or write stays out of the test process; the working directory is a
temporary folder for the examples that write files.
"""

from __future__ import annotations

import doctest
import importlib
import io
import json
import pkgutil
import re
import sys

import retrieval_kit

SECTION = re.compile(r"^\s*Examples?:\s*$", re.MULTILINE)


def main() -> None:
    finder = doctest.DocTestFinder(exclude_empty=False)
    walked = pkgutil.walk_packages(retrieval_kit.__path__, "retrieval_kit.")
    modules = sorted(m.name for m in walked)
    for name in ["retrieval_kit", *modules]:
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            if not test.docstring or not (test.examples or SECTION.search(test.docstring)):
                continue
            out = io.StringIO()
            runner = doctest.DocTestRunner(verbose=False)
            result = runner.run(test, out=out.write, clear_globs=True)
            skipped = sum(1 for e in test.examples if e.options.get(doctest.SKIP))
            record = {
                "name": test.name,
                "where": f"{test.filename}:{(test.lineno or 0) + 1}",
                "section": bool(SECTION.search(test.docstring)),
                "examples": len(test.examples),
                "skipped": skipped,
                "failed": result.failed,
                "report": out.getvalue(),
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    sys.exit(main())
