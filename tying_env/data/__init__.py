"""Data for the environments: corpora, tokenizers and the synthetic source.

- `tying_env.data.corpus`: a corpus as three arrays of token ids (synthetic,
  WikiText through HF `datasets`, or a local folder of text splits), cached on disk;
- `tying_env.data.tokenizer`: byte-level BPE trained on the train split,
  characters, or any Hugging Face tokenizer;
- `tying_env.data.synthetic`: the seeded hidden Markov source whose exact
  optimal perplexity is known;
- `tying_env.data.images`: image sets for ViT (scikit-learn's digits, a local folder of
  class folders, CIFAR-10 through HF `datasets`), one row per image, the label last.
"""

from tying_env.data.corpus import DATASETS, Corpus, load_corpus, offline_wikitext2
from tying_env.data.images import IMAGE_DATASETS, ImageSet, load_images
from tying_env.data.synthetic import HMMSource

__all__ = ["DATASETS", "IMAGE_DATASETS", "Corpus", "HMMSource", "ImageSet", "load_corpus",
           "load_images", "offline_wikitext2"]
