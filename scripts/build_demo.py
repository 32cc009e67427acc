"""Build the embedded demo in assets/demo: poisoned world data + precomputed audit.

    python scripts/build_demo.py

Run it after scripts/pretrain_tiny.py (the audit is the embedded model's).
"""
import logging

from byorn.demo import DEMO_DIR, build_demo

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    demo = build_demo()
    t = demo.audit.table
    print(f"demo in {DEMO_DIR}: {len(t)} samples, {int(t['suspicious'].sum())} flagged, "
          f"{sum(demo.ground_truth.values())} poisoned ({demo.attack})")
