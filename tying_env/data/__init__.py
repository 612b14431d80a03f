"""Data for the environments: corpora, tokenizers and the synthetic source.

- `tying_env.data.corpus`: a corpus as three arrays of token ids (synthetic,
  WikiText through HF `datasets`, or a local folder of text splits), cached on disk;
- `tying_env.data.tokenizer`: byte-level BPE trained on the train split,
  characters, or any Hugging Face tokenizer;
- `tying_env.data.synthetic`: the seeded hidden Markov source whose exact
  optimal perplexity is known.
"""

from tying_env.data.corpus import DATASETS, Corpus, load_corpus, offline_wikitext2
from tying_env.data.synthetic import HMMSource

__all__ = ["DATASETS", "Corpus", "HMMSource", "load_corpus", "offline_wikitext2"]
