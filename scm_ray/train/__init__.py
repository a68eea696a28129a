"""Distributed training on Ray Train (V2): per-worker loop, TorchTrainer assembly, checkpoints."""
