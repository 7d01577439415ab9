"""BLADE kit."""
