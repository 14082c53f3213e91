"""Structured width pruning of GLU-MLP layers in LLMs (PPM and friends), and an honest measurement of what it does.

Modules:

- `glu_pruning.distill`: The pruned student learns to predict what the unpruned teacher predicts: KL on softened next-token distributions, on calibration text, with a standard `transformers.Trainer` loop.
- `glu_pruning.recovery`: Re-fit each pruned layer's `down_proj` so that the kept neurons stand in for the removed ones: one linear solve per layer, no training, same architecture."""

__version__ = "0.1.0"
