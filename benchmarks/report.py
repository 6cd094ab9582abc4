"""Markdown tables from run.py's JSON lines: every figure, and mpiray against its targets.

    python benchmarks/report.py results.jsonl [--system mpiray] [--baseline ray]

Uses the newest run (the latest ``date``) found for each system in the file.
"""

from __future__ import annotations

import argparse
import json
import sys

# (workload, kind, bound, text): "vs" compares with the baseline system's figure,
# "anchor" with another workload of the same system, "abs" with a fixed bound
TARGETS = [
    ("single_client_tasks_async", "vs", 5.0, "tiny tasks async >= 5x Ray"),
    ("single_client_tasks_sync", "vs", 0.1, "sync round trip <= 1/10 of Ray's"),
    ("chain_of_tasks", "vs", 5.0, "chain of 1,000 tasks >= 5x Ray"),
    ("map_reduce", "vs", 5.0, "1,000 maps + 1 reduce >= 5x Ray"),
    ("put_100MiB", "anchor:memcpy_100MiB", 0.8, "100 MiB put >= 80% of memcpy"),
    ("cross_rank_pull_100MiB", "sys:mpi4py-rma", 0.8, "cross-rank pull 100 MiB >= 80% of raw RMA Get"),
    ("cross_rank_pull_1GiB", "sys:mpi4py-rma", 0.8, "cross-rank pull 1 GiB >= 80% of raw RMA Get"),
    ("startup_to_first_result", "abs", 0.5, "start-up to first result <= 0.5 s"),
    ("idle_cluster_rss", "abs", 150.0, "idle cluster <= 150 MiB RSS"),
    ("idle_cluster_cpu", "abs", 1.0, "idle cluster <= 1% of a core"),
]


def latest(rows: list[dict]) -> dict[tuple[str, str], dict]:
    newest: dict[str, str] = {}
    for r in rows:
        newest[r["system"]] = max(newest.get(r["system"], ""), r["date"])
    return {(r["system"], r["workload"]): r for r in rows if r["date"] == newest[r["system"]]}


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def figures(cells: dict, systems: list[str]) -> str:
    names = list(dict.fromkeys(w for (_, w) in cells))
    out = [
        "| workload | unit | " + " | ".join(systems) + " |",
        "|---|---|" + "---:|" * len(systems),
    ]
    for n in names:
        unit = next(r["unit"] for (s, w), r in cells.items() if w == n)
        vals = []
        for s in systems:
            r = cells.get((s, n))
            vals.append(
                "-" if r is None else f"{fmt(r['value'])} ({fmt(r['min'])}–{fmt(r['max'])})"
            )
        out.append(f"| {n} | {unit} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def targets(cells: dict, system: str, baseline: str) -> str:
    out = ["| target | mpiray | reference | ratio | met? |", "|---|---:|---:|---:|---|"]
    for name, kind, bound, text in TARGETS:
        mine = cells.get((system, name))
        if mine is None:
            out.append(f"| {text} | - | - | - | not measured |")
            continue
        v, ref, ratio = mine["value"], None, None
        if kind == "vs" or kind.startswith("sys:"):
            against = baseline if kind == "vs" else kind.split(":", 1)[1]
            other = cells.get((against, name))
            if other is None:
                out.append(f"| {text} | {fmt(v)} {mine['unit']} | - | - | no {against} figure |")
                continue
            ref, ratio = other["value"], v / other["value"]
            met = ratio >= bound if mine["higher_is_better"] else ratio <= bound
        elif kind.startswith("anchor:"):
            ref = cells[(system, kind.split(":", 1)[1])]["value"]
            ratio = v / ref
            met = ratio >= bound
        else:
            met = v <= bound
        ref_text = "-" if ref is None else f"{fmt(ref)} {mine['unit']}"
        out.append(
            f"| {text} | {fmt(v)} {mine['unit']} | {ref_text} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} | {'met' if met else '**missed**'} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("jsonl")
    p.add_argument("--system", default="mpiray")
    p.add_argument("--baseline", default="ray")
    args = p.parse_args(argv)
    with open(args.jsonl) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        print("no results", file=sys.stderr)
        return 1
    cells = latest(rows)
    systems = list(dict.fromkeys(s for (s, _) in cells))
    print(figures(cells, systems))
    print()
    print(targets(cells, args.system, args.baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
