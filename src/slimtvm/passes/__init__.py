"""Relax graph passes, one per file. A pass never imports a schedule (see DESIGN.md)."""
