from byorn.audit import Audit
from byorn.demo import DEMO_DIR, load_demo
from byorn.metrics import detection_metrics


def test_shipped_demo_is_consistent_with_data_and_model():
    demo = load_demo()
    t = demo.audit.table
    assert len(t) == len(demo.dataset) == 800
    assert demo.audit.meta["dataset_fingerprint"] == demo.dataset.fingerprint()
    assert t["id"].tolist() == demo.dataset.ids()
    assert sum(demo.ground_truth.values()) == 80
    assert t["gt_poisoned"].sum() == 80
    det = detection_metrics(t["score"], t["gt_poisoned"].astype(bool), flagged=t["suspicious"])
    assert det["auroc"] > 0.95 and det["recall"] == 1.0
    assert t[["umap_joint_x", "umap_joint_y"]].notna().all().all()
    assert len(demo.test_triggered) > 0 and demo.target in demo.dataset.by_id(
        next(i for i, p in demo.ground_truth.items() if p)).response


def test_shipped_audit_is_current():
    """The app starts on the shipped audit, not a recomputed one (scripts/build_demo.py after data changes)."""
    demo = load_demo()
    shipped = Audit.load(DEMO_DIR / "audit")
    assert shipped.meta["dataset_fingerprint"] == demo.dataset.fingerprint()
