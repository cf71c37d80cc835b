"""Learning benchmark: train configs for several seeds and tabulate the cost to reach the target.

Each (config, seed) runs ``esvo train CONFIG --set run.seed=S --out OUT/<config>/seed<S>`` in
this process (``esvo.cli.main``), then reads that run's ``metrics.jsonl``: the first generation
whose evaluated mean return reaches ``run.target`` gives the generations, training env steps,
evaluation env steps, episodes and wall seconds to threshold (a run that stopped without reaching
it reports its final counters and its best evaluated return). The median row is over the seeds
(over all of them, reached or not; the "reached" column says how many did).

    .venv/bin/python scripts/bench_learning.py configs/cartpole.yaml configs/pendulum.yaml \
        configs/halfcheetah.yaml --seeds 0 1 2 --workers 2

Extra ``--set key=value`` overrides are passed to every run (e.g. ``--set run.max_env_steps=1e6``).
``--variant LABEL:KEY=VALUE[,KEY=VALUE...]`` runs every config once more with those overrides,
side by side, its rows named ``config[LABEL]`` (e.g. the same config with another distribution):

    .venv/bin/python scripts/bench_learning.py configs/pendulum_lowrank.yaml \
        --variant separable:strategy.distribution=separable
``--reuse`` tabulates the runs already under ``--out`` (no training where a metrics.jsonl exists).

Step-budgeted populations and the adaptive episode cutoff are variants too (dotted keys, so no
commas inside a value); ``pairs`` and ``waves`` are the median pairs and waves per generation up
to the threshold, ``cap`` the training episode cap at the threshold (``-``: no cutoff):

    .venv/bin/python scripts/bench_learning.py configs/cartpole.yaml \
        --variant budget:strategy.population.env_steps=2000,strategy.population.max_pairs=64 \
        --variant cutoff:objective.episode_cutoff.initial=50

``--sigma`` adds the search distribution's trajectory: ``sigma_mean`` after the first generation
(``sig0``), at the row's generation (``sig``, with ``sig_min``/``sig_max`` over the
coordinates), the last evaluated return (``last_eval``) and, with adaptation sampling, the
adapted sigma rate at that generation (``lr_sig``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from esvo.cli import main as esvo_main
from esvo.config import load_config

COLUMNS = [
    ("config", 27, "s"),
    ("seed", 5, "s"),
    ("reached", 8, "s"),
    ("gens", 6, "d"),
    ("env_steps", 11, "d"),
    ("eval_steps", 11, "d"),
    ("episodes", 9, "d"),
    ("wall_s", 8, ".1f"),
    ("best_eval", 10, ".1f"),
    ("pairs", 6, ".1f"),
    ("waves", 6, ".1f"),
    ("cap", 6, "d"),
]


SIGMA_COLUMNS = [
    ("last_eval", 10, ".1f"),
    ("sig0", 7, ".4f"),
    ("sig", 7, ".4f"),
    ("sig_min", 8, ".4f"),
    ("sig_max", 8, ".4f"),
    ("lr_sig", 7, ".3f"),
]


def read_metrics(out: Path) -> list[dict]:
    files = sorted(out.rglob("metrics.jsonl"))
    if not files:
        raise FileNotFoundError(f"no metrics.jsonl under {out}")
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(rows: list[dict], target: float) -> dict:
    """Counters at the first evaluation reaching ``target`` (else at the end of the run)."""
    hit = next(
        (
            r
            for r in rows
            if r.get("eval_return_mean") is not None and r["eval_return_mean"] >= target
        ),
        None,
    )
    last = hit or rows[-1]
    evals = [r["eval_return_mean"] for r in rows if r.get("eval_return_mean") is not None]
    upto = rows[: rows.index(last) + 1]
    return {
        "reached": "yes" if hit else "no",
        "gens": int(last["generation"]) + 1,  # generation is 0-based, logged after its update
        "env_steps": int(last["env_steps"]),
        "eval_steps": int(last["eval_env_steps"]),
        "episodes": int(last["episodes"]),
        "wall_s": float(last["wall_s"]),
        "best_eval": max(evals) if evals else float("nan"),
        "pairs": statistics.median(r["num_pairs"] for r in upto),
        "waves": statistics.median(r.get("waves", 1) for r in upto),
        "cap": last.get("episode_cap", "-"),
        "last_eval": evals[-1] if evals else float("nan"),
        "sig0": float(rows[0]["sigma_mean"]),
        "sig": float(last["sigma_mean"]),
        "sig_min": float(last["sigma_min"]),
        "sig_max": float(last["sigma_max"]),
        "lr_sig": float(last.get("lr_sigma", float("nan"))),
    }


def fmt(row: dict, columns=COLUMNS) -> str:
    cells = []
    for name, width, spec in columns:
        v = row[name]
        if isinstance(v, str):
            cells.append(f"{v:>{width}}")
        elif spec == "d":
            cells.append(f"{round(v):>{width}d}")
        else:
            cells.append(f"{v:>{width}{spec}}")
    return " ".join(cells)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("configs", nargs="+", type=Path)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2, help="Ray workers (parallel.num_workers)")
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_learning"))
    p.add_argument(
        "--reuse", action="store_true", help="read existing runs, train only missing ones"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        metavar="LABEL:KEY=VALUE[,...]",
        help="also run every config with these overrides, rows named config[LABEL]",
    )
    p.add_argument("--sigma", action="store_true", help="add sigma's trajectory (columns)")
    p.add_argument(
        "--variants-only", action="store_true", help="skip the configs as they are (with --variant)"
    )
    args = p.parse_args()
    columns = COLUMNS + SIGMA_COLUMNS if args.sigma else COLUMNS
    variants = [] if args.variants_only else [("", [])]
    for v in args.variants:
        label, _, sets = v.partition(":")
        if not label or not sets:
            p.error(f"--variant {v!r}: expected LABEL:KEY=VALUE[,KEY=VALUE...]")
        variants.append((label, sets.split(",")))

    header = " ".join(f"{n:>{w}}" for n, w, _ in columns)
    table: list[str] = []
    for cfg_path, (label, extra) in [(c, v) for c in args.configs for v in variants]:
        target = load_config(cfg_path).run.target
        name = f"{cfg_path.stem}[{label}]" if label else cfg_path.stem
        results = []
        for seed in args.seeds:
            out = args.out / name / f"seed{seed}"
            if args.reuse and any(out.rglob("metrics.jsonl")):
                s = summarize(read_metrics(out), target)
                results.append(s)
                table.append(fmt({"config": name, "seed": str(seed), **s}, columns))
                continue
            shutil.rmtree(out, ignore_errors=True)
            argv = [
                "train",
                str(cfg_path),
                "--set",
                f"run.seed={seed}",
                "--out",
                str(out),
                "--set",
                f"parallel.num_workers={args.workers}",
                "--set",
                "logging.progress=none",
            ]
            for o in args.overrides + extra:
                argv += ["--set", o]
            esvo_main(argv)
            s = summarize(read_metrics(out), target)
            results.append(s)
            line = fmt({"config": name, "seed": str(seed), **s}, columns)
            table.append(line)
            print(line, flush=True)
        med = {
            k: statistics.median(r[k] for r in results) if results[0][k] != "-" else "-"
            for k, _, sp in columns[3:]
        }
        n_hit = sum(r["reached"] == "yes" for r in results)
        table.append(
            fmt(
                {"config": name, "seed": "med", "reached": f"{n_hit}/{len(results)}", **med},
                columns,
            )
        )
    print()
    print(header)
    print("\n".join(table))


if __name__ == "__main__":
    main()
