"""Placeholder until the demo tasks land."""
