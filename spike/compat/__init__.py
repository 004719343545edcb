"""Compatibility shims for third-party packages (no installed file is ever edited)."""
