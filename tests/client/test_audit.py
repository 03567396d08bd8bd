"""The audit trail: one committed record per input, resume memory, no mixing of models or secrets."""

from __future__ import annotations

import sqlite3

import pytest

from privdiff.client.audit import AuditError, AuditTrail, Record


def _trail(folder, model="m" * 64, fingerprint="f" * 16) -> AuditTrail:
    trail = AuditTrail(folder)
    trail.check_compatible(model, fingerprint)
    trail.start_run("run1", model, "key0", True, fingerprint, "0.1.0", "site verifier", 0.5)
    return trail


def test_each_record_is_committed_before_add_returns(tmp_path):
    trail = _trail(tmp_path)
    trail.add(Record("sha1", "ref1", "released/a/b/c.dcm", "released", "ok", 0.2))
    # A second connection (another process after a kill -9) sees it at once.
    other = sqlite3.connect(tmp_path / "audit.sqlite")
    rows = other.execute(
        "SELECT input_sha, status, reason, model_sha256, key_id, run_id FROM records"
    ).fetchall()
    assert rows == [("sha1", "released", "ok", "m" * 64, "key0", "run1")]
    other.close()
    trail.close()


def test_latest_record_per_input_is_what_a_rerun_remembers(tmp_path):
    trail = _trail(tmp_path)
    trail.add(Record("sha1", "ref1", "", "failed", "truncated"))
    trail.add(Record("sha2", "ref2", "released/x.dcm", "released", "ok"))
    trail.add(Record("sha1", "ref1", "released/y.dcm", "released", "ok"))
    past = trail.past_outcomes()
    assert {key: (o.status, o.output) for key, o in past.items()} == {
        ("sha1", "ref1"): ("released", "released/y.dcm"),
        ("sha2", "ref2"): ("released", "released/x.dcm"),
    }
    assert trail.latest_counts() == {"released": 2, "refused": 0, "failed": 0, "quarantined": 0}
    assert trail.output_owners() == {"released/x.dcm": "sha2", "released/y.dcm": "sha1"}
    trail.finish_run(0)
    trail.close()


def test_two_copies_of_one_file_are_remembered_apart(tmp_path):
    trail = _trail(tmp_path)
    trail.add(Record("sha1", "ref1", "released/x.dcm", "released", "ok"))
    trail.add(Record("sha1", "ref2", "", "refused", "duplicate_input"))
    past = trail.past_outcomes()
    assert past[("sha1", "ref1")].status == "released" and past[("sha1", "ref2")].status == "refused"
    trail.close()


def test_a_folder_keeps_one_model_and_one_site_secret(tmp_path):
    _trail(tmp_path).close()
    trail = AuditTrail(tmp_path)
    with pytest.raises(AuditError, match="another anonymizer"):
        trail.check_compatible("n" * 64, "f" * 16)
    with pytest.raises(AuditError, match="another site secret"):
        trail.check_compatible("m" * 64, "g" * 16)
    trail.check_compatible("m" * 64, "f" * 16)
    trail.close()


def test_unknown_status_is_rejected(tmp_path):
    trail = _trail(tmp_path)
    with pytest.raises(ValueError, match="unknown status"):
        trail.add(Record("sha", "ref", "", "skipped", "ok"))
    trail.close()


def test_a_file_that_is_not_an_audit_database_is_an_error(tmp_path):
    (tmp_path / "audit.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AuditError, match="not a readable audit database"):
        AuditTrail(tmp_path)
