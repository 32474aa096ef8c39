r"""CoNLL-2003 NER fine-tuning (Devlin et al. 2019, section 5.3): first-subword
labelling, entity-level F1; batch 32, 4 epochs, lr 5e-5, cased models.

  python -m bert_jax.main --config=configs/finetune_ner.py --workdir=/tmp/conll
  python -m bert_jax.main --config=configs/finetune_ner.py:init=hf:/ckpt/bert-base-cased \
      --config.data.lowercase=False --config.data.source=local \
      --config.data.data_dir=/data/conll2003 --workdir=/tmp/conll

Local files: data_dir/{train,valid,test}.txt ('word POS chunk NER' columns).
"""

from configs import finetune_common


def get_config(arg: str | None = None):
  a = finetune_common.parse(arg, task="conll2003", epochs=4.0, batch=32, seq=128)
  c = finetune_common.finetune_config(a.task, a, lr=a.lr or 5e-5, epochs=a.epochs,
                                      batch=a.batch, seq=a.seq)
  c.data.doc_stride = 64
  return c
