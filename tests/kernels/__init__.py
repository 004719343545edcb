"""Tests of spike/kernels."""
