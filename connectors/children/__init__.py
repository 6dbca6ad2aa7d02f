"""A local authority's children's extract (CSV shaped like the SEN2 return and the children in
need / looked-after children data): children, EHC requests and plans, and social care episodes,
read, checked and published with the council extracts' machinery (connectors.la.Importer with
these kinds). See README.md for the format."""
from connectors.children.format import CHILDREN, EHC, EPISODES, KINDS

__all__ = ["CHILDREN", "EHC", "EPISODES", "KINDS"]
