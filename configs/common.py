"""Pieces shared by every config: the model sizes table and the mesh defaults.

Sizes: tiny/mini/small/medium from Turc et al. 2019 ("Well-Read Students Learn
Better", the 24 small BERTs); base/large from Devlin et al. 2019. Heads = hidden/64 and
intermediate = 4*hidden throughout, as in both papers.
"""

import ml_collections

from bert_jax.config import ModelConfig

# name: (num_layers, hidden_size, num_heads)
SIZES = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'tiny,seq=128,vocab=8192' into {'size': 'tiny', 'seq': 128, ...}.

  A bare word is the size; `key=value` pairs override `defaults` (values are cast to
  the default's type). Unknown keys are an error naming the key.
  """
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    if "=" not in part:
      key, value = "size", part
    else:
      key, value = part.split("=", 1)
    if key not in out:
      raise ValueError(f"config argument {key!r} is not one of {sorted(out)}")
    out[key] = type(out[key])(value) if out[key] is not None else value
  if out.get("size") not in SIZES:
    raise ValueError(f"config argument size={out.get('size')!r} is not one of {list(SIZES)}")
  return ml_collections.ConfigDict(out)


def model_config(size: str, vocab_size: int = 30522) -> ml_collections.ConfigDict:
  """The `model` sub-config: every field of `bert_jax.config.ModelConfig` (declared and
  documented there, defaults BERT's) with the shape of `size`."""
  num_layers, hidden, heads = SIZES[size]
  return ml_collections.ConfigDict(ModelConfig(
      vocab_size=vocab_size, hidden_size=hidden, num_layers=num_layers, num_heads=heads,
      intermediate_size=4 * hidden).to_dict())


# mesh preset -> sizes of the ('data', 'fsdp', 'tensor') axes; -1 = the rest.
MESH_PRESETS = {
    "dp": (-1, 1, 1),       # pure data parallelism: params replicated on every device
    "fsdp": (1, -1, 1),     # ZeRO-3-like: params and optimizer state split over all devices
    "fsdp_tp": (1, -1, 2),  # FSDP + 2-way tensor parallelism (heads, mlp, vocab split)
}


def mesh_config(preset: str = "dp") -> ml_collections.ConfigDict:
  """Device mesh and logical-axis rules (see bert_jax/parallel.py).

  `preset` is one of MESH_PRESETS; `--config.mesh.shape` sets any other shape.
  """
  if preset not in MESH_PRESETS:
    raise ValueError(f"config argument mesh={preset!r} is not one of {list(MESH_PRESETS)}")
  c = ml_collections.ConfigDict()
  c.axes = ("data", "fsdp", "tensor")   # mesh axis names (the rules below refer to them)
  c.shape = MESH_PRESETS[preset]        # one size per axis; -1 = the rest of the devices
  # Logical name -> mesh axis (or list of axes, or None = replicated), as pairs.
  # Empty = bert_jax.parallel.DEFAULT_RULES (t5x-like). Every logical name the model
  # uses must have a rule (checked).
  c.rules = ()
  return c


def distributed_config() -> ml_collections.ConfigDict:
  """Multi-process start-up (`jax.distributed.initialize`), see bert_jax/parallel.py.

  mode 'auto' initializes when `coordinator_address` is set or the environment names
  a cluster (JAX_COORDINATOR_ADDRESS, SLURM with >1 task, Open MPI with >1 rank);
  'on' always calls it (TPU pods: no other field needed); 'off' never does.
  """
  c = ml_collections.ConfigDict()
  c.mode = "auto"                 # auto | on | off
  c.coordinator_address = ""      # host:port of process 0; '' = from the environment
  c.num_processes = -1            # -1 = from the environment
  c.process_id = -1               # -1 = from the environment
  c.cpu_collectives = "gloo"      # collectives for CPU devices across processes: gloo | mpi
  # This process's local devices, e.g. '0,1,2,3,4,5,6,7'; '' = JAX's choice (all, but
  # under SLURM only the GPU numbered SLURM_LOCALID: one process per GPU). One process
  # per node under SLURM needs all of them listed (launch/slurm.py --per=node does it).
  c.local_device_ids = ""
  return c
