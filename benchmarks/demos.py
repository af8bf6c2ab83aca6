"""Time every demo config end to end (``mmsam fit``: train, validate, test the best checkpoint).

    python benchmarks/demos.py                       # all of configs/demo/*.yaml
    python benchmarks/demos.py configs/demo/sam_lora_synthetic.yaml --threads 2

Each demo runs in a subprocess (into a temporary ``default_root_dir``); the table lists its wall
time and the final test mIoU of all modalities and of the first extra subset (e.g. RGB only),
parsed from the printed ``test/mIoU`` lines. Prints the machine's load average before and after:
timings on a shared machine are inflated.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_demo(config: Path, threads: int | None = None) -> dict[str, object]:
    """Run one demo; wall seconds, exit code and the test mIoU values it printed."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "mmsam.cli", "fit", "--config", str(config),
               "--trainer.default_root_dir", tmp, "--trainer.enable_progress_bar", "false"]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        wall = time.perf_counter() - t0
    scores = dict(re.findall(r"(test/mIoU(?:@[\w+]+)?)\s+([0-9.]+)", res.stdout))
    return {"config": config.name, "wall_s": wall, "rc": res.returncode,
            "mIoU": scores.get("test/mIoU"), "subsets": {k.split("@", 1)[1]: v for k, v in scores.items() if "@" in k},
            "error": res.stderr.strip().splitlines()[-1] if res.returncode and res.stderr.strip() else ""}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", type=Path, help="demo configs (default: configs/demo/*.yaml)")
    p.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of each run")
    ns = p.parse_args(argv)
    configs = ns.configs or sorted((ROOT / "configs" / "demo").glob("*.yaml"))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}   cpus: {os.cpu_count()}")
    rows = []
    for cfg in configs:
        row = run_demo(cfg, ns.threads)
        rows.append(row)
        print(f"  {row['config']}: {row['wall_s']:.0f} s (rc {row['rc']}) {row['error']}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(f"| demo | wall time | test mIoU (all) | test mIoU (subset) |\n|---|---:|---:|---|")
    for r in rows:
        miou = f"{float(r['mIoU']):.2f}" if r["mIoU"] else "—"
        sub = ", ".join(f"{k}: {float(v):.2f}" for k, v in r["subsets"].items()) or "—"
        print(f"| {r['config']} | {r['wall_s'] / 60:.1f} min | {miou} | {sub} |")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
