"""Every docstring example of retrieval_kit runs and gives the output it shows.

The examples run in a fresh process (``doctest_worker.py``) in a temporary working directory.
An example that cannot run there carries ``# doctest: +SKIP`` in its docstring, and its docstring
is listed below with the reason; the lists must match both ways. (The worker still runs a few
marked ones: those that only need an optional package that is installed, or write files.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import retrieval_kit

WORKER = Path(__file__).with_name("doctest_worker.py")


def run_anyway() -> set[str]:
    """The worker's docstrings whose marked examples run when their package is installed."""
    spec = importlib.util.spec_from_file_location("doctest_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.RUN_ANYWAY)


USER_FILE = "reads a file of the user's (weights, a GLDv2 CSV, an image) it does not create"
WRITES = "writes files or folders in the working directory"
NOT_DEFINED = "continues from names (model, paths, index, queries) left out to stay short"
WEIGHTS = "needs an optional package of ImageNet weights"

#: Docstring -> why some of its examples are skipped.
SKIP_REASONS = {
    "retrieval_kit.io.atomic_write": WRITES,
    "retrieval_kit.backbones.efficientnet_lite.efficientnet_lite_imagenet_state_dict": WEIGHTS,
    "retrieval_kit.backbones.efficientnet_lite.efficientnet_lite_weights_path": WEIGHTS,
    "retrieval_kit.backbones.model_file.load_model": USER_FILE,
    "retrieval_kit.backbones.model_file.save_model": WRITES,
    "retrieval_kit.backbones.state_dict.load_state_dict_file": USER_FILE,
    "retrieval_kit.backbones.state_dict.load_weights": USER_FILE,
    "retrieval_kit.backbones.timm_backbone.timm_trunk": "needs timm, an optional dependency",
    "retrieval_kit.data.cleaning": USER_FILE,
    "retrieval_kit.data.cleaning.load_places365_model": USER_FILE,
    "retrieval_kit.data.cleaning.places365_top_categories": NOT_DEFINED,
    "retrieval_kit.data.cleaning.read_places365_io": USER_FILE,
    "retrieval_kit.data.cleaning.write_removed_csv": WRITES,
    "retrieval_kit.data.gldv2.read_folder_dataset": USER_FILE,
    "retrieval_kit.data.gldv2.read_ids_csv": USER_FILE,
    "retrieval_kit.data.gldv2.read_retrieval_solution_csv": USER_FILE,
    "retrieval_kit.data.gldv2.read_solution_csv": USER_FILE,
    "retrieval_kit.data.gldv2.read_train_clean_csv": USER_FILE,
    "retrieval_kit.data.gldv2.read_train_csv": USER_FILE,
    "retrieval_kit.data.image_io.load_image": USER_FILE,
    "retrieval_kit.data.image_list_dataset.ImageListDataset": USER_FILE,
    "retrieval_kit.data.synthetic.synthetic_landmarks": WRITES,
    "retrieval_kit.embed": NOT_DEFINED,
    "retrieval_kit.embed.extract.extract_embeddings": NOT_DEFINED,
    "retrieval_kit.embed.extractor.Extractor": NOT_DEFINED,
    "retrieval_kit.embed.shards.merge_shards": USER_FILE,
    "retrieval_kit.embed.whitening.Whitening.load": USER_FILE,
    "retrieval_kit.embed.whitening.Whitening.save": WRITES,
    "retrieval_kit.index.faiss_file.from_faiss": WRITES,
    "retrieval_kit.index.index.Index.save": WRITES,
    "retrieval_kit.index.index.Index.to_faiss": WRITES,
    "retrieval_kit.index.index.load_index": USER_FILE,
    "retrieval_kit.predict.confidence_model.ConfidenceModel": NOT_DEFINED,
    "retrieval_kit.rerank.database_augmentation.DatabaseAugmentation": NOT_DEFINED,
    "retrieval_kit.rerank.distractor_reranker.DistractorReranker.rerank": NOT_DEFINED,
    "retrieval_kit.rerank.geometric_verification.verify_pair": NOT_DEFINED,
    "retrieval_kit.rerank.local_feature_cache.LocalFeatureCache": WRITES,
    "retrieval_kit.rerank.query_expansion.QueryExpansion": NOT_DEFINED,
    "retrieval_kit.rerank.sift_extractor.SIFTExtractor": "needs OpenCV, an optional dependency",
    "retrieval_kit.rerank.spatial_verification_reranker.SpatialVerificationReranker": NOT_DEFINED,
    "retrieval_kit.train.checkpoint.latest_checkpoint": USER_FILE,
    "retrieval_kit.train.checkpoint.load_checkpoint": USER_FILE,
    "retrieval_kit.train.checkpoint.save_checkpoint": WRITES,
    "retrieval_kit.train.loop.train_one_epoch": NOT_DEFINED,
    "retrieval_kit.viz.prediction_grid.save_prediction_grid": USER_FILE,
}


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[dict]:
    """One record per docstring with an ``Example:`` section or examples (see the worker)."""
    src = str(Path(retrieval_kit.__file__).resolve().parents[1])  # the package under test
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, str(WORKER)],
        cwd=tmp_path_factory.mktemp("doctest_cwd"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(found) > 100, "expected the package's docstring examples"
    return found


def test_docstring_examples_pass(records):
    failed = [r for r in records if r["failed"]]
    report = "\n".join(f"{r['name']} ({r['where']}):\n{r['report']}" for r in failed)
    assert not failed, f"{len(failed)} docstring example(s) failed:\n{report}"


def test_every_example_section_has_examples(records):
    empty = [f"{r['name']} ({r['where']})" for r in records if not r["examples"]]
    assert not empty, f"an Example: section without >>> lines: {empty}"


def test_every_skip_has_a_reason(records):
    skipping = {r["name"] for r in records if r["marked"]}
    assert sorted(skipping - set(SKIP_REASONS)) == [], "skipped without a reason listed here"
    assert sorted(set(SKIP_REASONS) - skipping) == [], "listed here but no longer skipped"
    assert sorted(run_anyway() - skipping) == [], "the worker runs anyway what is not skipped"


def test_most_examples_run(records):
    ran = sum(r["examples"] - r["skipped"] for r in records)
    skipped = sum(r["skipped"] for r in records)
    fully = sum(1 for r in records if not r["skipped"])
    anyway = sum(r["marked"] - r["skipped"] for r in records)
    print(
        f"{len(records)} docstrings: {fully} run fully, {len(records) - fully} skip some "
        f"examples; {ran} examples run ({anyway} of them marked +SKIP), {skipped} skipped"
    )
    assert ran > 2 * skipped
