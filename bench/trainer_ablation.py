"""Imbalance ablation benchmark: writes trainer_ablation.{md,json,png} (see trainer/ablation.py for the rows).

CPU budget (this machine, shared 2 cores):  python bench/trainer_ablation.py --train-limit 4000 --steps 150
GPU budget (full train split, one epoch):   python bench/trainer_ablation.py --train-limit 0 --steps 1357 --tag trainer_ablation_gpu
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.ablation import run_ablation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--train-limit", type=int, default=4000, help="0: the full training split")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--rows", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="trainer_ablation")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    result = run_ablation(Path(args.out), train_limit=args.train_limit or None, steps=args.steps,
                          eval_limit=args.eval_limit, rows=args.rows.split(",") if args.rows else None,
                          threads=args.threads, progress=not args.quiet, tag=args.tag)
    print(result["markdown"])
    print(f"total {result['total_seconds']} s; written to {args.out}/{args.tag}.md/.json/.png")


if __name__ == "__main__":
    main()
