"""Compare two output folders of benchmarks/product_outputs.sh: embeddings (max abs diff) and JSON outputs.

    python benchmarks/compare_outputs.py BEFORE AFTER

Prints the max abs difference of every embedding set and whether each JSON output is byte-identical
(the two folders' own paths, which the outputs name, are masked first). Exit status 1 when an
embedding differs by more than 1e-6 or a JSON output differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import kaldiio
import numpy as np


def main(before: Path, after: Path) -> int:
    worst = 0.0
    for scp in sorted(before.glob("emb/*/*.scp")):
        old, new = dict(kaldiio.load_scp(str(scp))), dict(kaldiio.load_scp(str(after / scp.relative_to(before))))
        if old.keys() != new.keys():
            print(f"{scp.relative_to(before)}: different utterances")
            return 1
        diff = max(float(np.abs(old[key] - new[key]).max()) for key in old)
        worst = max(worst, diff)
        print(f"{scp.relative_to(before)}: {len(old)} vectors, max abs diff {diff:.3g}")
    differing = []
    for path in sorted(before.glob("*.json")):
        old = path.read_text().replace(str(before), "<out>")
        new = (after / path.name).read_text().replace(str(after), "<out>")
        if old != new:
            differing.append(path.name)
            print(f"DIFFERS {path.name}\n  before: {old.strip()[:300]}\n  after:  {new.strip()[:300]}")
    total = len(list(before.glob("*.json")))
    print(f"embeddings: max abs diff {worst:.3g}; JSON outputs: {total - len(differing)} of {total} identical")
    return 1 if worst > 1e-6 or differing else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
