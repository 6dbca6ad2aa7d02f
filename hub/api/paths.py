"""The grammar of FHIR REST paths, as Starlette path convertors: a resource type starts with an
upper-case letter and an id uses only FHIR id characters. With these, `/fhir/metadata`,
`/fhir/Patient/_history` or `/fhir/Patient/1/$everything` can never be taken for a read or a
search, so the route order carries no meaning and the hottest route can be matched first."""
from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class ResourceTypeConvertor(Convertor[str]):
    regex = "[A-Z][A-Za-z]{1,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class FhirIdConvertor(Convertor[str]):
    regex = "[A-Za-z0-9\\-.]{1,64}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("fhirtype", ResourceTypeConvertor())
register_url_convertor("fhirid", FhirIdConvertor())
