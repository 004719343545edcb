"""Tests of spike/core."""
