"""Tests of spike/models."""
