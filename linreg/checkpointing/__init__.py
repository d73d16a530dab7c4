"""Checkpoint files: atomic writes, weights-only loads, and which file a resume starts from."""
