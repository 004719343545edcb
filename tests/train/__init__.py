"""Tests of spike/train."""
