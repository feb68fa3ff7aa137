"""How long mupcheck takes to judge a large results table: a one-seed size-ladder sweep of about 20,000 runs,
shaped like a published scaling study's (17 model shapes with width and depth grown together, 5 decimal
budgets, 10 batch sizes, rates half an octave apart, some cells never trained), read from CSV and judged
end to end (`mupcheck report --json`: every check, the laws, the plots).

    python benchmarks/judge_speed.py                       # writes benchmarks/results/<date>-judge-speed.json

Issue 35's target: under 30 s on this project's 2-core machine (7,200 rows took 8 s before). The table is
simulated (a random cliff-shaped curve per cell around a known law), so the numbers are the same on any
machine; only the time is not.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from simulate import random_shape  # noqa: E402

WIDTHS = (960, 1024, 1088, 1152, 1216, 1280, 1344, 1408, 1472, 1536, 1600, 1664, 1728, 1792, 1856, 1920, 2048)
DEPTHS = (7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 14, 14, 15, 16)
BUDGETS = (4e9, 1.14e10, 2e10, 4e10, 1e11)
BATCHES = tuple(2**k for k in range(5, 15))


def table(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for width, depth in zip(WIDTHS, DEPTHS):
        n = 12.0 * depth * width**2
        for tokens in BUDGETS:
            for batch in BATCHES:
                if rng.random() < 0.08:
                    continue  # ragged: never trained
                shape = random_shape(rng)
                law = 2.0 - 0.35 * math.log2(n) - 0.1 * math.log2(tokens) + 0.3 * math.log2(batch)
                x0 = law + 0.2 * rng.standard_normal()
                for x in np.arange(math.floor(law) - 6, math.floor(law) + 7.01, 0.5):
                    loss = 2.5 * float(shape(x - x0)) * (1 + 0.003 * rng.standard_normal())
                    rows.append({"width": width, "depth": depth, "tokens": f"{tokens:g}", "batch_size": batch,
                                 "lr": 2.0**x, "loss": "" if loss > 7.5 else loss})
    return pd.DataFrame(rows)


def main() -> int:
    rng = np.random.default_rng(35)
    runs = table(rng)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        runs.to_csv(work / "runs.csv", index=False)
        (work / "ladder.toml").write_text('name = "ladder"\nresults = "runs.csv"\nparametrization = "sp"\n')
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mupcheck", "report", str(work / "ladder.toml"), "--out",
                               str(work / "out"), "--json"], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        data = json.loads((work / "out" / "ladder.json").read_text())
    result = {"rows": len(runs), "seconds": round(seconds, 1), "checks": len(data["outcomes"]),
              "counts": data["counts"], "scaling": data["laws"]["sp"]["scaling"],
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(result, indent=1))
    out = ROOT / "benchmarks" / "results" / f"{time.strftime('%Y%m%d')}-judge-speed.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
