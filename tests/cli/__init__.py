"""Tests of spike/cli."""
