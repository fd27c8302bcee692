"""Lossy compression on request (runs only when asked, and reports its error)."""
