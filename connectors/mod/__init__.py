"""MOD transition handover: the published JSON Schema, its checks, and the two ways in (HTTPS
POST and a watched drop folder), both publishing one Envelope per accepted document."""
from connectors.mod.document import (
           CONTENT_TYPE,
           KIND,
           SCHEMA_ID,
           check,
           envelope_meta,
           problems,
)
from connectors.mod.dropfolder import DropFolder
from connectors.mod.endpoint import create_app
from connectors.mod.intake import Intake

__all__ = ["CONTENT_TYPE", "KIND", "SCHEMA_ID", "DropFolder", "Intake", "check", "create_app", "envelope_meta",
           "problems"]
