"""Invito."""
