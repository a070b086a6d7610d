"""Narrow questions about one part (how close to the decode limit; which JPEG binding)."""
