"""Synthetic, captioned demo data (for fine-tuning demos, tests and benchmarks)."""

from clipdex.demo.scenes import (
    Scene,
    make_scenes,
    random_scenes,
    scene_key,
    split_descriptions,
    write_pairs,
)

__all__ = ["Scene", "make_scenes", "random_scenes", "scene_key", "split_descriptions", "write_pairs"]
