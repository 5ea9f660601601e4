"""RLAIF-V (arXiv 2405.17220): claim-level AI feedback turned into DPO preference pairs.

One round: split each sampled response into atomic claims (`claims`), ask a labeler each claim
as a yes/no question (`labeler`), score responses by −(rejected claims) and build
length-balanced pairs (`pairs`); hallucination metrics (`hallucination`) and best-of-N
reranking with the implicit DPO reward (`best_of_n`) measure and use the result. The round
driver lives in `rl/`; everything here is pure or talks only to the `Scorer` protocol.

Submodules are imported explicitly (`from rewards.rlaifv.pairs import build_pairs`) so that
loading the config (`rewards.rlaifv.config`) stays light.
"""
