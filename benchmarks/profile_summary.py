r"""Top operations by device time from a `jax.profiler` trace (`train.profile_steps`).

  python benchmarks/profile_summary.py WORKDIR/profile            # newest run in it
  python benchmarks/profile_summary.py WORKDIR/profile --top=40 --group=category

Reads the Chrome trace (`perfetto_trace.json.gz`, or any `*.trace.json.gz`) that
`bert_jax.train.profiling.StepProfiler` writes next to the XSpace; standard library
only, so it runs wherever the trace is (no TensorFlow or xprof needed). Which events
count as device operations:
  - GPU/TPU: every event on a `/device:...` process that has events, libtpu's
    `/device:CUSTOM:...` tracers excepted (on the threads named like
    'XLA Ops' when there are such; the module and step summary lines are skipped);
  - CPU: the events of the host threads that run XLA's compiled code (thread names
    holding 'XLA' or 'Eigen', or events named like HLO instructions), Python and
    runtime bookkeeping excluded.
Self time = an event's duration minus that of the events nested inside it on the
same thread. `--group=category` sums by HLO category (the name before the first
'.' or '_': fusion, convolution, dot, copy, ...).

With `--hlo=DIR`, the optimized HLO that XLA dumped while compiling the step (run it
with `XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text"`; `side_by_side.py
--profile` does this for the row it traces), each operation is traced back to the model
code that made it, through the `op_name` metadata JAX writes on every instruction:
`--group=source` sums by forward/backward/optimizer + Flax module path + primitive
('bwd bert/encoder/layer_*/attention/query/dot_general'), `--group=module` by
forward/backward/optimizer + module path, every layer folded into `layer_*`.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys

# Device-process threads that summarise rather than run operations.
SUMMARY_THREADS = ("XLA Modules", "Steps", "Framework", "Source code", "TraceMe",
                   "Launch Stats", "host", "python")
# Host events that are runtime bookkeeping, not XLA operations (CPU traces).
HOST_NOISE = re.compile(r"^(\$|end: |PjitFunction|Thunk|ThreadpoolListener|XlaModule|"
                        r"TfrtCpu|PjRt|ExecuteHelper|Execute|BufferFromPyval|SlinkyThreadPool|"
                        r"device_put|pjit|jit|wait|Wait)")
HLO_NAME = re.compile(r"^[a-z][a-z0-9_\-]*(\.[0-9]+)*$")


def find_trace(path: str) -> str:
  """The trace file itself, or the newest Chrome trace under a directory."""
  if os.path.isfile(path):
    return path
  found = (glob.glob(os.path.join(path, "**", "perfetto_trace.json.gz"), recursive=True)
           + glob.glob(os.path.join(path, "**", "*.trace.json.gz"), recursive=True))
  if not found:
    raise SystemExit(f"no perfetto_trace.json.gz or *.trace.json.gz under {path}: "
                     "was train.profile_steps set and the run past step B?")
  return max(found, key=os.path.getmtime)


def load_events(trace_path: str) -> tuple[list[dict], dict, dict]:
  """(complete events, pid -> process name, (pid, tid) -> thread name)."""
  opener = gzip.open if trace_path.endswith(".gz") else open
  with opener(trace_path, "rt", encoding="utf-8") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  processes, threads, complete = {}, {}, []
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      processes[e["pid"]] = e["args"]["name"]
    elif e.get("ph") == "M" and e.get("name") == "thread_name":
      threads[(e["pid"], e.get("tid"))] = e["args"]["name"]
    elif e.get("ph") == "X" and "dur" in e:
      complete.append(e)
  return complete, processes, threads


def device_events(events, processes, threads) -> tuple[list[dict], str]:
  """The events that are device operations (module docstring), and where they ran."""
  # libtpu, once installed, adds a "/device:CUSTOM:Megascale Trace" process (its
  # DCN tracer) to every trace, CPU runs included: not a device that runs ops.
  device_pids = {p for p, n in processes.items()
                 if "/device:" in n and "/device:CUSTOM" not in n}
  device_pids &= {e["pid"] for e in events}
  if device_pids:
    on_device = [e for e in events if e["pid"] in device_pids]
    names = {k: v for k, v in threads.items() if k[0] in device_pids}
    op_threads = {k for k, v in names.items() if "XLA Ops" in v}
    if not op_threads:
      op_threads = {k for k, v in names.items()
                    if not any(s.lower() in v.lower() for s in SUMMARY_THREADS)}
    picked = [e for e in on_device if (e["pid"], e.get("tid")) in op_threads]
    return picked or on_device, ", ".join(sorted(processes[p] for p in device_pids))
  xla_threads = {k for k, v in threads.items() if "xla" in v.lower() or "eigen" in v.lower()}
  picked = [e for e in events
            if not HOST_NOISE.match(e["name"])
            and ((e["pid"], e.get("tid")) in xla_threads or HLO_NAME.match(e["name"]))]
  return picked, "host (CPU: XLA's compute threads)"


def self_times(events: list[dict]) -> list[tuple[str, float]]:
  """(name, self microseconds) per event: nested events on a thread are subtracted."""
  by_thread = collections.defaultdict(list)
  for e in events:
    by_thread[(e["pid"], e.get("tid"))].append(e)
  out = []
  for thread_events in by_thread.values():
    thread_events.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack: list[list] = []  # [end, name, self]
    for e in thread_events:
      while stack and stack[-1][0] <= e["ts"]:
        _, name, own = stack.pop()
        out.append((name, own))
      if stack:
        stack[-1][2] -= e["dur"]
      stack.append([e["ts"] + e["dur"], e["name"], float(e["dur"])])
    out.extend((name, own) for _, name, own in stack)
  return out


def category(name: str) -> str:
  return re.split(r"[._]", name, maxsplit=1)[0] or name


HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*metadata=\{[^}]*op_name=\"([^\"]*)\"")


def load_op_names(hlo_path: str) -> dict[tuple[str, str], str]:
  """(HLO module, instruction name) -> JAX `op_name`, from XLA's
  `*after_optimizations.txt` dumps (a file, or the newest such file of each module
  under a directory); module '' holds every instruction too, for events that do not
  name their module. GPU kernels may be named after their instruction with '_' for
  '.' (loop_fusion_3): both spellings are keys."""
  files = [hlo_path]
  if os.path.isdir(hlo_path):
    newest: dict[str, str] = {}
    for f in sorted(glob.glob(os.path.join(hlo_path, "**", "*after_optimizations.txt"),
                              recursive=True), key=os.path.getmtime):
      newest[os.path.basename(f).split(".", 1)[-1]] = f   # per module name and stage
    files = list(newest.values())
  if not files:
    raise SystemExit(f"no *after_optimizations.txt under {hlo_path}")
  names = {}
  for f in files:
    module = os.path.basename(f).split(".")[1] if os.path.basename(f).startswith(
        "module_") else ""
    with open(f, encoding="utf-8") as lines:
      for line in lines:
        m = HLO_INSTRUCTION.match(line)
        if m:
          for op in {m.group(1), m.group(1).replace(".", "_")}:
            names[(module, op)] = names[("", op)] = m.group(2)
  return names


def source_key(op_name: str, with_primitive: bool = True) -> str:
  """'jit(train_step)/transpose(jvp(BertForPreTraining))/bert/encoder/layer_3/attention/
  query/dot_general' -> 'bwd bert/encoder/layer_*/attention/query/dot_general'.

  fwd: under `jax.grad`'s forward (jvp), bwd: its transpose, opt: outside the gradient
  (the optimizer update, metrics).
  """
  direction = ("bwd" if "transpose(" in op_name else "fwd" if "jvp(" in op_name
               else "opt")
  parts = [p.replace("\\'", "'") for p in op_name.split("/") if "(" not in p]
  if not with_primitive and len(parts) > 1:
    parts = parts[:-1]
  path = re.sub(r"layer_\d+", "layer_*", "/".join(parts))
  return f"{direction} {path or op_name}"


def summarize(path: str, top: int = 25, group: str = "op", hlo: str = "") -> list[str]:
  """The markdown table lines: top-N operations (or categories, or model sources with
  `hlo`) by self time."""
  trace_path = find_trace(path)
  events, processes, threads = load_events(trace_path)
  ops, where = device_events(events, processes, threads)
  op_names = load_op_names(hlo) if hlo else {}
  if group in ("source", "module"):
    if not op_names:
      raise SystemExit(f"--group={group} needs --hlo (XLA's dumped HLO of the step)")
    for e in ops:   # the HLO instruction the event ran, as the profiler recorded it
      args = e.get("args", {})
      op = args.get("hlo_op", e["name"])
      op_name = op_names.get((args.get("hlo_module", ""), op)) or op_names.get(("", op))
      e["name"] = (source_key(op_name, group == "source") if op_name
                   else f"(no op_name) {category(op)}")
  totals, counts = collections.Counter(), collections.Counter()
  for name, own in self_times(ops):
    key = category(name) if group == "category" else name
    totals[key] += own
    counts[key] += 1
  grand = sum(totals.values())
  lines = [f"trace: {trace_path}", f"device: {where}; {len(ops)} events, "
           f"{grand / 1e3:.1f} ms self time in all", "",
           f"| {group} | self ms | count | % of total |", "|---|---:|---:|---:|"]
  for key, own in totals.most_common(top):
    lines.append(f"| {key} | {own / 1e3:.2f} | {counts[key]} | "
                 f"{100 * own / max(grand, 1e-9):.1f}% |")
  return lines


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("trace", help="a profile directory (WORKDIR/profile) or a trace file")
  p.add_argument("--top", type=int, default=25)
  p.add_argument("--group", default="op", choices=("op", "category", "source", "module"))
  p.add_argument("--hlo", default="", help="XLA's HLO dump of the step (--xla_dump_to), "
                 "for --group=source/module")
  a = p.parse_args()
  print("\n".join(summarize(a.trace, a.top, a.group, a.hlo)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
