"""Ember: self-hosted, isolated Linux sandboxes."""

__version__ = "0.1.0"
