"""The "fixed mapping" the poison-message test deploys: a kind the default mappings lack."""
from __future__ import annotations

import json

from hub.fhir.ids import source_id


def map_note(payload: bytes, source: str) -> dict:
    note = json.loads(payload)
    res_id = source_id(source, "Communication", "note-1")
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "Communication", "id": res_id, "status": "completed",
                     "payload": [{"contentString": note["note"]}]},
        "request": {"method": "PUT", "url": f"Communication/{res_id}"}}]}


MAPPINGS = {"care-note": map_note}
