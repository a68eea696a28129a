"""Benchmarks: training step (plain vs SCM), box extraction, data loader."""
