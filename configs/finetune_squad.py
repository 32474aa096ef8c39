r"""SQuAD fine-tuning (Devlin et al. 2019, section 4.2/4.3): batch 32, max_seq_length
384, doc_stride 128, max_query_length 64; v1.1: 3 epochs lr 5e-5 (run_squad.py's
README: 2 epochs 3e-5 for base); v2.0: 2 epochs lr 5e-5, null threshold tuned on dev.

  python -m bert_jax.main --config=configs/finetune_squad.py:task=squad_v1.1 --workdir=/tmp/squad1
  python -m bert_jax.main --config=configs/finetune_squad.py:task=squad_v2.0,init=hf:/ckpt/bert-large-uncased \
      --config.data.source=local --config.data.data_dir=/data/squad --workdir=/tmp/squad2

Local files: data_dir/{train,dev}-v1.1.json or -v2.0.json (the official json).
"""

from configs import finetune_common


def get_config(arg: str | None = None):
  a = finetune_common.parse(arg, task="squad_v1.1", epochs=0.0, batch=32, seq=384)
  epochs = a.epochs or (2.0 if a.task == "squad_v2.0" else 3.0)
  c = finetune_common.finetune_config(a.task, a, lr=a.lr or 5e-5, epochs=epochs,
                                      batch=a.batch, seq=a.seq)
  c.data.doc_stride = 128
  c.data.max_query_length = 64
  return c
