"""Tests of spike/backends."""
