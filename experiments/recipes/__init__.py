"""Paper recipes as config files (`--config=experiments/recipes/X.py:ARG`); fine-tuning
recipes are sweep files in experiments/sweeps/ (glue.py, squad.py)."""


def parse(arg: str | None, **defaults: str) -> dict[str, str]:
  """'phase=1,data=/p128' -> {'phase': '1', 'data': '/p128', ...defaults}; unknown keys
  are an error naming the key."""
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, _, value = part.partition("=")
    if key not in out:
      raise ValueError(f"config argument {key!r} is not one of {sorted(out)}")
    out[key] = value
  return out
