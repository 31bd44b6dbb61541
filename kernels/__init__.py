"""Triton kernels and their launchers. Knows tensors, strides and affine matrices; nothing about groups or training."""
