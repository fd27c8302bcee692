"""Relax graph passes, one per file, listed in order in passes/sequence.py. A pass recognises and
records; it never imports a schedule or the lowering (docs/architecture.md; import-linter checks)."""
