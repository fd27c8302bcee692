"""Target presets, cross toolchains and machine detection."""
