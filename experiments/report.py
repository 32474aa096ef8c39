"""A sweep's report from its runs' own files: a markdown/JSON table and matplotlib PNGs.

Per point (WORKDIR/<point>/):
  * final metrics: `final_eval.json` of pretraining (`{"eval": {k: v}}` -> `eval/k`) or
    `results.json` of fine-tuning (the best epoch's `{"eval": {split: {k: v}}}` ->
    `eval/split/k`), the same names the runs write to `metrics.jsonl`; a metric found
    in neither is the last value of its `metrics.jsonl` column (e.g. `train/loss`);
  * curves: `metrics.jsonl` rows `{"step": s, "train/loss": ..., ...}`.
Writes WORKDIR/results.md, results.json, final.png (final metrics per point, the
median a tick with min-max whiskers, each run a dot) and curves.png (metrics over steps).
"""

from __future__ import annotations

import json
import statistics
from typing import Any, Sequence

from bert_jax import storage, workdir as workdir_lib

LOWER_IS_BETTER = ("loss", "perplexity")


def lower_is_better(metric: str) -> bool:
  return any(word in metric for word in LOWER_IS_BETTER)


def read_curves(run_dir: str) -> dict[str, list[tuple[int, float]]]:
  """metrics.jsonl -> {metric: [(step, value), ...]} in file order."""
  curves: dict[str, list[tuple[int, float]]] = {}
  path = workdir_lib.metrics_file(run_dir)
  if not path.exists():
    return curves
  with storage.open_text(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        for k, v in row.items():
          if k != "step":
            curves.setdefault(k, []).append((int(row["step"]), float(v)))
  return curves


def read_final(run_dir: str) -> dict[str, float]:
  """The run's final metrics from final_eval.json or results.json (see module doc)."""
  pretrain = workdir_lib.final_eval_file(run_dir)
  finetune = workdir_lib.results_file(run_dir)
  out: dict[str, float] = {}
  if pretrain.exists():
    out = {f"eval/{k}": v for k, v in storage.read_json(pretrain)["eval"].items()}
  elif finetune.exists():
    best = storage.read_json(finetune)["best"]
    out = {f"eval/{split}/{k}": v for split, metrics in best["eval"].items()
           for k, v in metrics.items() if isinstance(v, (int, float))}
    out["best_epoch"] = best["epoch"]
  return out


def collect(sweep, workdir: str, points, status: dict[str, str] | None = None) -> list[dict]:
  """One row per point: its grid values, final metrics, curves and status."""
  rows = []
  for point in points:
    run_dir = storage.join(workdir, point.name)
    final = read_final(run_dir)
    curves = read_curves(run_dir)
    finished = bool(final)
    for metric in sweep.metrics:
      if metric not in final and finished and curves.get(metric):
        final[metric] = curves[metric][-1][1]
    state = (status or {}).get(point.name) or ("done" if finished else "not run")
    rows.append({"point": point.name, "values": point.values, "status": state,
                 "finished": finished,
                 "final": {m: final[m] for m in sweep.metrics if m in final},
                 "curves": {m: curves[m] for m in sweep.curves if m in curves}})
  return rows


def aggregate(rows: Sequence[dict], over: str, metrics: Sequence[str]) -> list[dict]:
  """Median, min and max of each metric over field `over`, per other-field combination."""
  groups: dict[tuple, dict] = {}
  for row in rows:
    rest = {k: v for k, v in row["values"].items() if k != over}
    key = tuple(rest.items())
    group = groups.setdefault(key, {"values": rest, "runs": []})
    if row["finished"]:
      group["runs"].append({over: row["values"][over], **row["final"]})
  out = []
  for group in groups.values():
    stats = {}
    for m in metrics:
      values = [r[m] for r in group["runs"] if m in r]
      if values:
        stats[m] = {"median": statistics.median(values), "min": min(values),
                    "max": max(values), "n": len(values)}
    out.append({**group, "stats": stats})
  return out


def best_index(entries: Sequence[dict], metric: str, value_of) -> int | None:
  scored = [(value_of(e), i) for i, e in enumerate(entries) if value_of(e) is not None]
  if not scored:
    return None
  pick = min if lower_is_better(metric) else max
  return pick(scored, key=lambda vi: vi[0])[1]  # ties: the first


def _fmt(value: float | None) -> str:
  return "—" if value is None else f"{value:.4f}"


def markdown(sweep, rows: Sequence[dict], groups: Sequence[dict] | None) -> str:
  fixed = ", ".join(f"`{k}={v}`" for k, v in sweep.overrides.items()) or "none"
  done = sum(r["finished"] for r in rows)
  lines = [f"## {sweep.title or 'Sweep'}", "",
           f"Base `{sweep.base}`; fixed overrides: {fixed}; {done}/{len(rows)} points finished.",
           ""]
  select = sweep.select_metric
  if groups is not None:
    fields = [f for f in sweep.grid if f != sweep.aggregate_over]
    head = fields + [f"{m} median (min, max)" for m in sweep.metrics] + [sweep.aggregate_over + "s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = best_index(groups, select, lambda g: g["stats"].get(select, {}).get("median"))
    for i, g in enumerate(groups):
      cells = [str(g["values"][f]) for f in fields]
      if cells and i == best:
        cells[0] += " **best**"
      for m in sweep.metrics:
        s = g["stats"].get(m)
        cells.append("—" if s is None else f"{_fmt(s['median'])} ({_fmt(s['min'])}, {_fmt(s['max'])})")
      cells.append(str(max((s["n"] for s in g["stats"].values()), default=0)))
      lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nMedian over `{sweep.aggregate_over}`; best by `{select}`.")
  else:
    fields = list(sweep.grid)
    head = fields + list(sweep.metrics) + ["status"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
      cells = [str(r["values"][f]) for f in fields]
      cells += [_fmt(r["final"].get(m)) for m in sweep.metrics] + [r["status"]]
      lines.append("| " + " | ".join(cells) + " |")
  if sweep.paper:
    source = f" ({sweep.paper_source})" if sweep.paper_source else ""
    lines.append(f"\nPaper{source}: " + ", ".join(f"`{m}` {v}" for m, v in sweep.paper.items()))
  return "\n".join(lines) + "\n"


def plot_final(sweep, rows, groups, path: str) -> None:
  """One panel per metric: each run a dot; the median a tick with min-max whiskers."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  metrics = list(sweep.metrics)
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
  over = sweep.aggregate_over
  if groups is None:
    groups = [{"values": r["values"], "runs": [r["final"]] if r["finished"] else []}
              for r in rows]
  labels = [",".join(f"{k.split('.')[-1]}={v}" for k, v in g["values"].items()) or "all"
            for g in groups]
  for ax, metric in zip(axes[0], metrics):
    for x, g in enumerate(groups):
      values = [run[metric] for run in g["runs"] if metric in run]
      if not values:
        continue
      mid = statistics.median(values)
      ax.errorbar(x, mid, yerr=[[mid - min(values)], [max(values) - mid]], fmt="_",
                  markersize=18, color="C0", capsize=4)
      ax.plot([x] * len(values), values, "o", color="C0", alpha=0.6)
    if metric in sweep.paper:
      ax.axhline(sweep.paper[metric], color="C3", linestyle="--", label="paper")
      ax.legend()
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_xticks(range(len(groups)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(metric + (f" (median over {over})" if over else ""), fontsize=9)
  fig.suptitle(sweep.title or "final metrics", fontsize=10)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)


def plot_curves(sweep, rows, path: str) -> None:
  """One panel per curve metric, one line per point, over steps."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  metrics = list(sweep.curves)
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for i, r in enumerate(rows):
      points = r["curves"].get(metric)
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, marker="." if len(points) < 30 else None,
                color=f"C{i % 10}", label=r["point"])
    ax.set_xlabel("step")
    ax.set_title(metric, fontsize=9)
  handles, labels = axes[0][0].get_legend_handles_labels()
  if handles:
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7)
  fig.tight_layout(rect=(0, 0.08 + 0.04 * (len(rows) // 4), 1, 1))
  _save(fig, path)
  plt.close(fig)


def write_report(sweep, workdir: str, points, status: dict[str, str] | None = None
                 ) -> dict[str, Any]:
  """Collects, writes results.md/.json and the PNGs; returns the JSON table (+ markdown)."""
  rows = collect(sweep, workdir, points, status)
  groups = aggregate(rows, sweep.aggregate_over, sweep.metrics) if sweep.aggregate_over else None
  text = markdown(sweep, rows, groups)
  table = {"title": sweep.title, "base": sweep.base, "grid": sweep.grid,
           "overrides": sweep.overrides, "metrics": list(sweep.metrics),
           "aggregate_over": sweep.aggregate_over, "paper": sweep.paper,
           "paper_source": sweep.paper_source,
           "rows": [{k: v for k, v in r.items() if k != "curves"} for r in rows],
           "groups": groups}
  storage.write_text_atomic(storage.join(workdir, "results.json"),
                            json.dumps(table, indent=2, default=str))
  storage.write_text_atomic(storage.join(workdir, "results.md"), text)
  plot_final(sweep, rows, groups, storage.join(workdir, "final.png"))
  plot_curves(sweep, rows, storage.join(workdir, "curves.png"))
  return {**table, "markdown": text}


def _save(fig, path: str) -> None:
  """The figure as a PNG at `path` (local or remote), written atomically."""
  with storage.open_atomic(path) as f:
    fig.savefig(f, dpi=100, format="png")
