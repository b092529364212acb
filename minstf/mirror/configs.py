"""Named configurations for the mirror's training script.

They live in minstf/config.py (reachable without torch, for the CLI and the
runtime); this module re-exports them for the mirror's own imports.
"""
from ..config import CONFIGS, FULL_CONFIG, SMALL_CONFIG  # noqa: F401
