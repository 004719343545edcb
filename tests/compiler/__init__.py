"""Tests of spike/compiler."""
