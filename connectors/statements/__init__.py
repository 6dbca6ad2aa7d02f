"""Direct payment and support service statements, third party and provider invoices (CSV, one
row per line), read as streams, checked row by row, duplicates caught, published to the inbound
topic keyed by person. See README.md for the format."""
from connectors.statements.extract import StatementImporter, envelope_for
from connectors.statements.format import KINDS, LINES

__all__ = ["KINDS", "LINES", "StatementImporter", "envelope_for"]
