"""training/validate_labeler.py end to end on a tiny IU-style report archive built in tmp_path."""

from __future__ import annotations

import io
import tarfile

from training import validate_labeler

REPORTS = {  # id: (findings, impression, MeSH major terms)
    1: ("Mild cardiomegaly. No pleural effusion.", "Cardiomegaly.", ["Cardiomegaly/mild"]),
    2: ("The lungs are clear.", "No acute cardiopulmonary process.", ["normal"]),
    3: ("Small right pleural effusion.", "Right effusion.", ["Pleural Effusion/right/small"]),
    4: ("", "Possible pneumonia.", ["Pneumonia/lower lobe"]),
    5: ("Cardiomegaly.", "Cardiomegaly.", ["No Indexing"]),  # not indexed: left out
}


def _xml(rid: int, findings: str, impression: str, mesh: list[str]) -> bytes:
    majors = "".join(f"<major>{m}</major>" for m in mesh)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{rid}"/><MedlineCitation><Article><Abstract>'
        f'<AbstractText Label="FINDINGS">{findings}</AbstractText><AbstractText Label="IMPRESSION">{impression}</AbstractText>'
        f"</Abstract></Article></MedlineCitation><MeSH>{majors}</MeSH></eCitation>"
    ).encode()


def test_validate_labeler_writes_agreement_table(tmp_path):
    archive = tmp_path / "reports.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for rid, (findings, impression, mesh) in REPORTS.items():
            data = _xml(rid, findings, impression, mesh)
            info = tarfile.TarInfo(f"ecgen-radiology/{rid}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "docs" / "labeler.md"
    assert validate_labeler.main(["--out", str(out), "--reports-tgz", str(archive)]) == 0
    text = out.read_text()
    assert "on the FINDINGS + IMPRESSION text of 4 IU / OpenI reports (5 in the archive; 1 without MeSH" in text
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in text.splitlines() if line.startswith("| ")}
    # columns: MeSH +, Labeler +, Precision, Recall, F1, kappa, F1 (uncertain = +)
    assert rows["Cardiomegaly (Cgml.)"][:5] == ["1", "1", "1.000", "1.000", "1.000"]
    assert rows["Pleural Effusion (Eff.)"][:5] == ["1", "1", "1.000", "1.000", "1.000"]
    assert rows["Pneumonia (Pnm.)"][:5] == ["1", "0", "0.000", "0.000", "0.000"]  # labeler says uncertain
    assert rows["Pneumonia (Pnm.)"][6].rstrip(" |") == "1.000"  # uncertain counted as positive
    assert rows["No Finding (No F.)"][:5] == ["1", "1", "1.000", "1.000", "1.000"]

    impression_only = tmp_path / "impression.md"
    validate_labeler.main(["--out", str(impression_only), "--reports-tgz", str(archive), "--section", "impression"])
    assert "IMPRESSION text of 4" in impression_only.read_text()
