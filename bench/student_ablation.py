"""Student ablation (issue 14): the MiniLM student plain vs + asymmetric loss vs + label smoothing vs + distillation
(vs + distillation with extra unlabelled texts), on one seed and budget; plus seconds per epoch of each base on
this machine. Writes ``<out>/<tag>.{md,json,png}`` (rows) and ``<out>/<tag>_bases.json`` (timings).

"plain" is the shipped recipe's stage 1: BCE, sqrt-inverse positive weights, neutral undersampled to 1.0x, mean
pooling, lr 5e-4 (``--lr``). Each "+" row changes one thing. The distillation rows need a teacher artifact with the
same 28 labels (the MPNet teacher from ``bench/train_teacher.sh``); ``--extra-texts`` are unlabelled texts (XED's
English files: only their text is read).

Full run (CPU, shared 2 cores; a few hours: 5 rows x (--steps x ~0.4-1 s + teacher pass + full dev/test eval)):
    python bench/student_ablation.py --teacher ~/.cache/emotion-monitor/runs/mpnet-teacher-asl \\
        --extra-texts ../shared/data/xed/en-annotated.tsv,../shared/data/xed/neu_en.txt \\
        --train-limit 8000 --steps 500 --time-bases all-MiniLM-L6-v2,all-mpnet-base-v2
Proof on a tiny budget (minutes; the shipped model as a stand-in teacher):
    python bench/student_ablation.py --teacher trainer/default_model --extra-texts ../shared/data/xed/neu_en.txt \\
        --train-limit 256 --steps 8 --eval-limit 64 --extra-limit 128 --time-steps 3 --tag student_ablation_tiny
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.ablation import run_ablation  # noqa: E402

PLAIN = {"loss": "bce", "label_weights": "sqrt_inverse", "undersample_ratio": 1.0, "ismote": False,
         "pooling": "mean"}


def student_rows(teacher: str | None, extra_texts: str | None, extra_limit: int | None, alpha: float,
                 temperature: float) -> dict:
    rows: dict = {"plain": (PLAIN, None),
                  "+asl": (PLAIN | {"loss": "asl"}, None),
                  "+label_smoothing": (PLAIN | {"label_smoothing": 0.1}, None)}
    if teacher:
        kd = {"teacher": teacher, "distill_alpha": alpha, "distill_temperature": temperature}
        rows["+distillation"] = (PLAIN | kd, None)
        if extra_texts:
            rows["+distillation+extra_texts"] = (
                PLAIN | kd | {"distill_texts": extra_texts, "distill_texts_limit": extra_limit}, None)
    return rows


def time_bases(bases: list[str], steps: int, threads: int, work_dir: Path) -> dict:
    """Seconds per full-train-split epoch for each base, from ``steps`` real training steps (the trainer's own
    ``seconds_per_epoch``: measured seconds scaled to the epoch's step count); dev/test limited to 16 rows."""
    from trainer.settings import TrainerSettings
    from trainer.trainer import train

    timings = {}
    for base in bases:
        settings = TrainerSettings(**PLAIN, base_model=base, max_steps=steps, eval_limit=16, threads=threads,
                                   resume=False, log_every=max(1, steps), output=str(work_dir / f"time_{base}"))
        started = time.time()
        result = train(settings, progress=False)
        config = result.config
        timings[base] = {"seconds_per_epoch": round(result.seconds_per_epoch, 1),
                         "seconds_per_step": round(config["stage1_seconds"] / steps, 2),
                         "steps_per_epoch": config["steps_per_epoch"], "steps_timed": steps,
                         "hardware": config["hardware"], "wall_seconds": round(time.time() - started, 1),
                         # a shared machine's figures mean little without its load (other jobs' runnable threads)
                         "load_average_1min": round(os.getloadavg()[0], 1)}
        print(f"{base}: {timings[base]['seconds_per_step']} s/step, {timings[base]['seconds_per_epoch']} s/epoch")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--tag", default="student_ablation")
    parser.add_argument("--teacher", default=None, help="Teacher artifact (28 GoEmotions labels); no teacher: no "
                                                        "distillation rows")
    parser.add_argument("--extra-texts", default=None, help="Comma-separated unlabelled text files")
    parser.add_argument("--extra-limit", type=int, default=None, help="At most N extra texts")
    parser.add_argument("--alpha", type=float, default=0.5, help="Weight of the true-label loss")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--train-limit", type=int, default=8000, help="0: the full training split")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--rows", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-bases", default="all-MiniLM-L6-v2",
                        help="Comma-separated bases to time per epoch ('' to skip); all-mpnet-base-v2 needs [mpnet]")
    parser.add_argument("--time-steps", type=int, default=20)
    parser.add_argument("--work-dir", default="runs/student_ablation")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    out, work = Path(args.out), Path(args.work_dir)
    table = student_rows(args.teacher, args.extra_texts, args.extra_limit, args.alpha, args.temperature)
    result = run_ablation(out, train_limit=args.train_limit or None, steps=args.steps, eval_limit=args.eval_limit,
                          rows=args.rows.split(",") if args.rows else None, threads=args.threads, work_dir=work,
                          progress=not args.quiet, tag=args.tag, table=table, extra={"lr": args.lr},
                          title="Student ablation")
    print(result["markdown"])
    bases = [b.strip() for b in args.time_bases.split(",") if b.strip()]
    if bases:
        timings = time_bases(bases, args.time_steps, args.threads, work)
        payload = {"bases": timings, "note": "seconds per epoch of the full (undersampled) training split, from "
                                             f"{args.time_steps} timed steps of batch 32 on this machine"}
        (out / f"{args.tag}_bases.json").write_text(json.dumps(payload, indent=2))
    summary = {"teacher": args.teacher, "extra_texts": args.extra_texts, "alpha": args.alpha,
               "temperature": args.temperature, "lr": args.lr}
    data = json.loads((out / f"{args.tag}.json").read_text())
    data["distillation"] = summary
    (out / f"{args.tag}.json").write_text(json.dumps(data, indent=2))
    print(f"total {result['total_seconds']} s; written to {out}/{args.tag}.md/.json/.png")


if __name__ == "__main__":
    main()
