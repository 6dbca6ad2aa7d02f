"""FHIR R4 XML <-> FHIR JSON, following https://hl7.org/fhir/R4/xml.html and json.html.

The hub stores FHIR JSON; this module lets it accept and serve `application/fhir+xml` too.
fhir.resources' own XML support loses data on real examples, so this is a converter of our
own. It never builds pydantic models: it only reads, once per FHIR type, the element
metadata the fhir.resources R4B classes carry (which elements exist, in what order, which
repeat, which are primitives of which type, which hold a nested type or a whole resource).

Decimals: xml_to_json returns every decimal as a `FhirDecimal` (see hub.fhir.jsontext), which
keeps its exact digits; serialise the result with `jsontext.dumps`. json_to_xml accepts
decimals as FhirDecimal, Decimal, int or float, and writes each with the digits it has.
"""
from __future__ import annotations

import copy
import decimal
import enum
import math
import re
import threading
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.element import Element
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.resource import Resource
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase
from lxml import etree

from hub.fhir.errors import FhirError
from hub.fhir.jsontext import DECIMAL_TEXT, FhirDecimal

__all__ = ["json_to_xml", "xml_to_json"]

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_FHIR_PREFIX = "{" + FHIR_NS + "}"
_DIV_TAG = "{" + XHTML_NS + "}div"

# Abstract resource types: they name a class in R4B but never a resource instance.
_ABSTRACT_RESOURCES = frozenset({"Resource", "DomainResource"})

# FHIR integer ranges (json.html: integers are JSON numbers; they are 32-bit in R4).
_INTEGER_RANGES = {
    "integer": (-(2**31), 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
}
_INTEGER_TEXT = re.compile(r"[-+]?[0-9]+")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_XML_WHITESPACE = " \t\r\n"


# --------------------------------------------------------------------------- metadata


class Kind(enum.Enum):
    """How an element is carried in XML."""

    ATTRIBUTE = "attribute"  # Element.id, Extension.url: an XML attribute, a string in JSON
    PRIMITIVE = "primitive"  # <name value="..."/>, plus `_name` in JSON for id/extensions
    COMPLEX = "complex"  # a nested datatype or backbone element
    RESOURCE = "resource"  # a whole resource, wrapped: <contained><Patient>...</Patient>
    XHTML = "xhtml"  # Narrative.div: an XHTML div, a string in JSON


@dataclass(eq=False, slots=True)
class ElementInfo:
    """One element of a FHIR type: everything conversion needs, read once from R4B."""

    name: str
    kind: Kind
    is_list: bool
    order: int
    tag: str  # Clark notation, {namespace}name
    primitive: str | None = None  # FHIR primitive type name, for PRIMITIVE
    model: type[FHIRAbstractModel] | None = None  # nested type, for COMPLEX
    # XML value attribute text <-> JSON value, chosen once by primitive type.
    parse: Callable[[str, str | None, str], Any] = field(default=None, repr=False)  # type: ignore[assignment]
    format: Callable[[Any, str], str] = field(default=None, repr=False)  # type: ignore[assignment]
    _type: TypeInfo | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.primitive is not None:
            self.parse = _PARSERS.get(self.primitive, _parse_string)
            self.format = _FORMATTERS.get(self.primitive, _format_string)

    @property
    def type_info(self) -> TypeInfo:
        """The nested type's metadata, resolved on first use (types refer to themselves)."""
        if self._type is None:
            assert self.model is not None, f"{self.name} has no nested type"
            self._type = _type_info(self.model)
        return self._type


@dataclass(eq=False, slots=True)
class TypeInfo:
    """The elements of one FHIR type, by JSON name (in FHIR order) and by XML tag."""

    name: str
    elements: dict[str, ElementInfo]
    by_tag: dict[str, ElementInfo]


def _is_element(field_info: Any) -> bool:
    extra = field_info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("element_property"))


def _strip_optional(annotation: Any) -> Any:
    """`X | None` -> X; fhir.resources declares every element optional."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) != 1:
            raise TypeError(f"unsupported union annotation {annotation!r}")
        return members[0]
    return annotation


def _primitive_name(annotation: Any) -> str | None:
    """The FHIR primitive type named by an annotation, or None for a nested type.

    fhir.resources writes primitives as `Annotated[python_type, Marker()]` where the
    marker's `__visit_name__` is the FHIR type name; boolean is a bare `bool` and uuid
    pydantic's UUID4.
    """
    if annotation is bool:
        return "boolean"
    if typing.get_origin(annotation) is typing.Annotated:
        for marker in annotation.__metadata__:
            name = getattr(marker, "__visit_name__", None)
            if isinstance(name, str):
                return name
        if typing.get_args(annotation)[0] is uuid.UUID:
            return "uuid"
    return None


def _element_info(name: str, annotation: Any, order: int, attribute: bool) -> ElementInfo:
    """Classify one element from its pydantic annotation."""
    annotation = _strip_optional(annotation)
    is_list = typing.get_origin(annotation) is list
    if is_list:
        (annotation,) = typing.get_args(annotation)
        annotation = _strip_optional(annotation)  # repeating primitives allow nulls
    if attribute:
        return ElementInfo(name, Kind.ATTRIBUTE, False, order, name, primitive="string")
    primitive = _primitive_name(annotation)
    if primitive == "xhtml":
        return ElementInfo(name, Kind.XHTML, is_list, order, _DIV_TAG, primitive=primitive)
    if primitive is not None:
        return ElementInfo(name, Kind.PRIMITIVE, is_list, order, _FHIR_PREFIX + name, primitive)
    if isinstance(annotation, type) and issubclass(annotation, FhirBase):
        model = annotation.get_model_klass()
        kind = Kind.RESOURCE if issubclass(model, Resource) else Kind.COMPLEX
        return ElementInfo(name, kind, is_list, order, _FHIR_PREFIX + name, model=model)
    raise TypeError(f"unsupported annotation for element {name}: {annotation!r}")


def _attribute_names(model: type[FHIRAbstractModel]) -> frozenset[str]:
    """Elements the XML format carries as attributes (the `xmlAttr` ones in R4)."""
    if issubclass(model, Extension):
        return frozenset({"id", "url"})
    if issubclass(model, Element):
        return frozenset({"id"})
    return frozenset()


@cache
def _type_info(model: type[FHIRAbstractModel]) -> TypeInfo:
    """Element metadata of one R4B model class, built once per class."""
    fields = {
        (info.alias or name): info
        for name, info in model.model_fields.items()
        if _is_element(info)
    }
    sequence = list(model.elements_sequence())
    sequence += sorted(set(fields) - set(sequence))  # defensive: FHIR order first
    attributes = _attribute_names(model)
    elements: dict[str, ElementInfo] = {}
    for order, name in enumerate(sequence):
        if name in fields:
            annotation = fields[name].annotation
            elements[name] = _element_info(name, annotation, order, name in attributes)
    by_tag = {e.tag: e for e in elements.values() if e.kind is not Kind.ATTRIBUTE}
    type_name = getattr(model, "__resource_type__", model.__name__)
    return TypeInfo(str(type_name), elements, by_tag)


def _primitive_extension_info() -> TypeInfo:
    """What a primitive may carry besides its value (`_name` in JSON): id and extension."""
    return _type_info(Element)


_RESOURCE_TYPES: dict[str, TypeInfo] = {}


def _resource_type_info(name: Any, expression: str | None) -> TypeInfo:
    """Metadata for a concrete resource type; FhirError for anything else.

    Only known names are cached, so untrusted input cannot grow the cache.
    """
    info = _RESOURCE_TYPES.get(name) if isinstance(name, str) else None
    if info is not None:
        return info
    model = _resource_model(name)
    if model is None:
        raise FhirError(
            "structure", f"Unknown resource type '{name}'", expression=expression or None
        )
    info = _type_info(model)
    _RESOURCE_TYPES[name] = info
    return info


def _resource_model(name: Any) -> type[FHIRAbstractModel] | None:
    if not isinstance(name, str) or not name.isidentifier() or name in _ABSTRACT_RESOURCES:
        return None
    try:
        model = get_fhir_model_class(name)
    except (ValueError, ImportError):
        return None
    if not issubclass(model, Resource) or model.__resource_type__ != name:
        return None
    return model


# --------------------------------------------------------------------------- parsing XML

_local = threading.local()


def _parser() -> etree.XMLParser:
    """A hardened parser (no DTDs, entities, network or huge trees), one per thread
    because lxml parsers must not be shared between threads."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            huge_tree=False,
            load_dtd=False,
            dtd_validation=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
        )
        _local.parser = parser
    return parser


_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""")


def _require_utf8(data: bytes) -> None:
    """FHIR XML is UTF-8 (xml.html): a UTF-16 or UTF-32 body, or one declaring another encoding,
    is refused rather than transcoded (a leading UTF-8 byte order mark is allowed)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"\x00\x00", b"<\x00", b"\x00<")):
        raise FhirError("structure", "FHIR XML must be encoded as UTF-8 (this body is UTF-16 or UTF-32)")
    declared = _DECLARED_ENCODING.match(data.removeprefix(b"\xef\xbb\xbf"))
    if declared and declared.group(1).decode("ascii", "replace").lower() not in ("utf-8", "utf8"):
        raise FhirError("structure", f"FHIR XML must be encoded as UTF-8, not "
                        f"'{declared.group(1).decode('ascii', 'replace')[:20]}'")


def _parse(data: bytes | str, what: str, expression: str | None = None) -> etree._Element:
    """Parse untrusted XML; a document with a DOCTYPE is refused outright (FHIR has none,
    and it is where entity-expansion and XXE attacks live)."""
    if isinstance(data, bytes):
        _require_utf8(data)
    if isinstance(data, str):
        # Already decoded text: its declared encoding no longer applies (and lxml refuses it).
        data = _XML_DECLARATION.sub("", data.lstrip("\ufeff"), count=1)
    try:
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        reason = getattr(exc, "msg", None) or str(exc)
        raise FhirError("structure", f"Malformed {what}: {reason}", expression=expression) from None
    if root.getroottree().docinfo.doctype:
        raise FhirError(
            "structure", f"{what} must not contain a DOCTYPE declaration", expression=expression
        )
    return root


def _split_tag(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return None, tag


def _stray_text(text: str | None) -> str | None:
    """Non-whitespace text, which FHIR elements never contain (values go in attributes)."""
    if text:
        stripped = text.strip(_XML_WHITESPACE)
        if stripped:
            return stripped
    return None


def _child_elements(element: etree._Element, path: str) -> list[etree._Element]:
    """The element children of a FHIR element, refusing text content between them."""
    stray = _stray_text(element.text)
    children = []
    for child in element:
        stray = stray or _stray_text(child.tail)
        if isinstance(child.tag, str):
            children.append(child)
    if stray is not None:
        snippet = stray if len(stray) <= 40 else stray[:37] + "..."
        raise FhirError(
            "structure",
            f"{path} must not contain text (found {snippet!r}); "
            "primitive values go in the value attribute",
            expression=path,
        )
    return children


def _unknown_element(tag: str, owner: TypeInfo, path: str) -> FhirError:
    namespace, local = _split_tag(tag)
    expression = f"{path}.{local}"
    if namespace != FHIR_NS and not (local == "div" and "div" in owner.elements):
        found = f"namespace '{namespace}'" if namespace else "no namespace"
        return FhirError(
            "structure",
            f"Element {expression} must be in the FHIR namespace {FHIR_NS} (found {found})",
            expression=expression,
        )
    element = owner.elements.get(local)
    if element is not None and element.kind is Kind.ATTRIBUTE:
        message = f"{expression} must be an XML attribute, not an element"
    elif element is not None and element.kind is Kind.XHTML:
        message = f"{expression} must be an XHTML div in the namespace {XHTML_NS}"
    else:
        message = f"Unknown element '{local}' at {expression} ({owner.name} has no such element)"
    return FhirError("structure", message, expression=expression)


def _read_resource(element: etree._Element, path: str | None) -> dict[str, Any]:
    """A resource element (the root, or the child of a wrapper like <contained>)."""
    namespace, resource_type = _split_tag(element.tag)
    expression = path or resource_type
    if namespace != FHIR_NS:
        found = f"namespace '{namespace}'" if namespace else "no namespace"
        raise FhirError(
            "structure",
            f"Resource element '{resource_type}' must be in the FHIR namespace {FHIR_NS} "
            f"(found {found})",
            expression=expression,
        )
    info = _resource_type_info(resource_type, expression)
    result: dict[str, Any] = {"resourceType": resource_type}
    _read_content(element, info, expression, result)
    return result


def _read_content(
    element: etree._Element,
    info: TypeInfo,
    path: str,
    out: dict[str, Any],
    *,
    has_value: bool = False,
) -> str | None:
    """Read an element's attributes and children into `out`, in FHIR order.

    Returns the `value` attribute when `has_value` (primitives). Attributes in other
    namespaces (xsi:schemaLocation, ...) carry no FHIR content and are ignored.
    """
    gathered: dict[ElementInfo, list[Any]] = {}
    raw_value: str | None = None
    for name, text in element.attrib.items():
        if name.startswith("{"):
            continue
        if has_value and name == "value":
            raw_value = text
            continue
        target = info.elements.get(name)
        if target is None or target.kind is not Kind.ATTRIBUTE:
            raise FhirError(
                "structure", f"Unexpected attribute '{name}' on {path}", expression=path
            )
        gathered[target] = [text]
    last: ElementInfo | None = None
    for child in _child_elements(element, path):
        target = info.by_tag.get(child.tag)
        if target is None:
            raise _unknown_element(child.tag, info, path)
        if last is not None and target.order < last.order:
            raise FhirError(
                "structure",
                f"{path}.{target.name} is out of order: FHIR XML gives the elements of {info.name} in a "
                f"fixed order, and {target.name} comes before {last.name}",
                expression=f"{path}.{target.name}",
            )
        last = target
        values = gathered.setdefault(target, [])
        if values and not target.is_list:
            raise FhirError(
                "structure",
                f"{path}.{target.name} occurs more than once but does not repeat",
                expression=f"{path}.{target.name}",
            )
        child_path = f"{path}.{target.name}"
        if target.is_list:
            child_path = f"{child_path}[{len(values)}]"
        values.append(_read_value(child, target, child_path))
    for target in sorted(gathered, key=_by_order):
        _store(out, target, gathered[target])
    return raw_value


def _by_order(element: ElementInfo) -> int:
    return element.order


def _read_value(element: etree._Element, target: ElementInfo, path: str) -> Any:
    kind = target.kind
    if kind is Kind.PRIMITIVE:
        return _read_primitive(element, target, path)
    if kind is Kind.COMPLEX:
        return _read_complex(element, target.type_info, path)
    if kind is Kind.RESOURCE:
        return _read_wrapped_resource(element, path)
    return _read_div(element)


def _store(out: dict[str, Any], target: ElementInfo, values: list[Any]) -> None:
    """Write one element's gathered values; primitives split into `name` and `_name`."""
    name = target.name
    if target.kind is not Kind.PRIMITIVE:
        out[name] = values if target.is_list else values[0]
        return
    if not target.is_list:
        value, extras = values[0]
        if value is not None:
            out[name] = value
        if extras is not None:
            out["_" + name] = extras
        return
    plain = [value for value, _ in values]
    extras_list = [extras for _, extras in values]
    if any(value is not None for value in plain):
        out[name] = plain
    if any(extras is not None for extras in extras_list):
        out["_" + name] = extras_list


def _read_complex(element: etree._Element, info: TypeInfo, path: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    _read_content(element, info, path, result)
    if not result:
        raise FhirError(
            "structure",
            f"{path} is empty; FHIR elements must have a value or children",
            expression=path,
        )
    return result


def _read_primitive(
    element: etree._Element, target: ElementInfo, path: str
) -> tuple[Any, dict[str, Any] | None]:
    """A primitive element: its value, and its id/extensions (`_name` in JSON) if any."""
    parse = target.parse
    attributes = element.attrib
    if len(attributes) == 1 and not len(element) and not _stray_text(element.text):
        raw = attributes.get("value")  # the common <name value="..."/>: no extras to read
        if raw is not None:
            return parse(raw, target.primitive, path), None
    extras: dict[str, Any] = {}
    raw = _read_content(element, _primitive_extension_info(), path, extras, has_value=True)
    if raw is None:
        if not extras:
            raise FhirError(
                "structure",
                f"{path} has neither a value attribute nor extensions",
                expression=path,
            )
        return None, extras
    return parse(raw, target.primitive, path), (extras or None)


def _read_wrapped_resource(wrapper: etree._Element, path: str) -> dict[str, Any]:
    """<contained>, <resource>, <outcome>: a wrapper holding exactly one resource."""
    for name in wrapper.attrib:
        if not name.startswith("{"):
            raise FhirError(
                "structure", f"Unexpected attribute '{name}' on {path}", expression=path
            )
    children = _child_elements(wrapper, path)
    if len(children) != 1:
        raise FhirError(
            "structure",
            f"{path} must hold exactly one resource element, found {len(children)}",
            expression=path,
        )
    return _read_resource(children[0], path)


def _read_div(div: etree._Element) -> str:
    """Narrative.div as its exact XHTML text, declaring only the namespaces it uses.

    Serialising a sub-element makes lxml repeat every namespace declared on its
    ancestors, so an isolated copy is cleaned unless the div only sees XHTML.
    """
    if div.nsmap != {None: XHTML_NS}:
        div = copy.deepcopy(div)
        etree.cleanup_namespaces(div)
    text: str = etree.tostring(div, encoding="unicode", with_tail=False)
    return text


def _parse_string(raw: str, primitive: str | None, path: str) -> str:
    return raw


def _parse_boolean(raw: str, primitive: str | None, path: str) -> bool:
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise FhirError(
        "value", f"{path}: '{raw}' is not a boolean (true or false)", expression=path
    )


def _parse_integer(raw: str, primitive: str | None, path: str) -> int:
    low, high = _INTEGER_RANGES[primitive or "integer"]
    if _INTEGER_TEXT.fullmatch(raw):
        number = int(raw)
        if low <= number <= high:
            return number
    raise FhirError(
        "value",
        f"{path}: '{raw}' is not a valid {primitive} ({low}..{high})",
        expression=path,
    )


def _parse_decimal(raw: str, primitive: str | None, path: str) -> FhirDecimal:
    if DECIMAL_TEXT.fullmatch(raw):
        try:
            return FhirDecimal(raw)
        except decimal.DecimalException:
            pass
    raise FhirError("value", f"{path}: '{raw}' is not a valid decimal", expression=path)


_PARSERS: dict[str, Callable[[str, str | None, str], Any]] = {
    "boolean": _parse_boolean,
    "integer": _parse_integer,
    "unsignedInt": _parse_integer,
    "positiveInt": _parse_integer,
    "decimal": _parse_decimal,
}


def xml_to_json(data: bytes | str) -> dict[str, Any]:
    """FHIR XML (one resource) -> FHIR JSON as a dict; decimals come back as FhirDecimal.

    Raises FhirError("structure") for malformed or unsafe XML, the wrong namespace, an
    unknown resource type or element (named by its path, e.g. Patient.nmae), and
    FhirError("value") for a primitive value its type cannot hold.
    """
    root = _parse(data, "XML")
    return _read_resource(root, None)


# --------------------------------------------------------------------------- writing XML


def json_to_xml(resource: dict[str, Any]) -> bytes:
    """FHIR JSON (one resource, as a dict) -> UTF-8 FHIR XML with an XML declaration.

    Child elements are written in FHIR order whatever the JSON key order; `fhir_comments`
    are dropped. Raises FhirError for content the resource type does not define.
    """
    root = _write_resource(None, resource, None)
    xml: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return xml


def _write_resource(
    parent: etree._Element | None, resource: Any, path: str | None
) -> etree._Element:
    if not isinstance(resource, dict):
        raise FhirError(
            "structure", f"{path or 'The body'} must be a JSON object", expression=path
        )
    resource_type = resource.get("resourceType")
    if resource_type is None:
        raise FhirError(
            "structure", f"{path or 'The resource'} has no resourceType", expression=path
        )
    info = _resource_type_info(resource_type, path)
    tag = _FHIR_PREFIX + resource_type
    if parent is None:
        element = etree.Element(tag, nsmap={None: FHIR_NS})
    else:
        element = etree.SubElement(parent, tag)
    _write_content(element, resource, info, path or resource_type)
    return element


def _write_content(
    element: etree._Element, source: Any, info: TypeInfo, path: str
) -> None:
    """Write a JSON object's elements as attributes/children of `element`, in FHIR order."""
    if not isinstance(source, dict):
        raise FhirError("structure", f"{path} must be a JSON object", expression=path)
    values: dict[ElementInfo, list[Any]] = {}  # element -> [value, `_name` extras]
    for key, value in source.items():
        if key == "resourceType" or key == "fhir_comments" or value is None:
            continue  # comments are not carried; a null is the same as an absent element
        is_extras = key.startswith("_")
        name = key[1:] if is_extras else key
        target = info.elements.get(name)
        if target is None or (is_extras and target.kind is not Kind.PRIMITIVE):
            raise FhirError(
                "structure",
                f"Unknown element '{key}' at {path}.{key} ({info.name} has no such element)",
                expression=f"{path}.{key}",
            )
        values.setdefault(target, [None, None])[1 if is_extras else 0] = value
    for target in sorted(values, key=_by_order):
        value, extras = values[target]
        _write_element(element, target, value, extras, f"{path}.{target.name}")


def _write_element(
    parent: etree._Element, target: ElementInfo, value: Any, extras: Any, path: str
) -> None:
    kind = target.kind
    if kind is Kind.PRIMITIVE:
        _write_primitives(parent, target, value, extras, path)
        return
    if kind is Kind.ATTRIBUTE:
        _set_attribute(parent, target.name, _format_string(value, path), path)
        return
    items = _as_items(target, value, path)
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]" if target.is_list else path
        if kind is Kind.COMPLEX:
            child = etree.SubElement(parent, target.tag)
            _write_content(child, item, target.type_info, item_path)
            if not len(child) and not child.attrib:
                raise FhirError(
                    "structure", f"{item_path} is an empty object", expression=item_path
                )
        elif kind is Kind.RESOURCE:
            wrapper = etree.SubElement(parent, target.tag)
            _write_resource(wrapper, item, item_path)
        else:
            parent.append(_parse_div(item, item_path))


def _as_items(target: ElementInfo, value: Any, path: str) -> list[Any]:
    """The element's occurrences, checking JSON arrays are used exactly for repeating ones."""
    if target.is_list:
        if not isinstance(value, list):
            raise FhirError("structure", f"{path} must be a JSON array", expression=path)
        return value
    if isinstance(value, list):
        raise FhirError("structure", f"{path} must not be a JSON array", expression=path)
    return [value]


def _write_primitives(
    parent: etree._Element, target: ElementInfo, value: Any, extras: Any, path: str
) -> None:
    """`name` and `_name` together: one XML element per position, value plus extensions."""
    if not target.is_list:
        _write_primitive(parent, target, value, extras, path)
        return
    values = _as_items(target, value, path) if value is not None else None
    extras_list = _as_items(target, extras, _extras_path(path)) if extras is not None else None
    if values is not None and extras_list is not None and len(values) != len(extras_list):
        raise FhirError(
            "structure",
            f"{path} and its _{target.name} array differ in length",
            expression=path,
        )
    count = len(values if values is not None else extras_list or [])
    for index in range(count):
        item = values[index] if values is not None else None
        item_extras = extras_list[index] if extras_list is not None else None
        _write_primitive(parent, target, item, item_extras, f"{path}[{index}]")


def _extras_path(path: str) -> str:
    """Patient.name[0].given -> Patient.name[0]._given, the JSON property of its extras."""
    parent, _, name = path.rpartition(".")
    return f"{parent}._{name}"


def _write_primitive(
    parent: etree._Element, target: ElementInfo, value: Any, extras: Any, path: str
) -> None:
    if value is None and extras is None:
        raise FhirError(
            "structure", f"{path} has neither a value nor extensions", expression=path
        )
    attributes = {} if value is None else {"value": target.format(value, path)}
    try:
        child = etree.SubElement(parent, target.tag, attributes)
    except ValueError:
        raise _not_xml_text(path) from None
    if extras is not None:
        _write_content(child, extras, _primitive_extension_info(), path)


def _set_attribute(element: etree._Element, name: str, text: str, path: str) -> None:
    try:
        element.set(name, text)
    except ValueError:
        raise _not_xml_text(path) from None


def _not_xml_text(path: str) -> FhirError:
    """lxml refuses control characters and other text XML 1.0 cannot carry."""
    return FhirError(
        "value", f"{path} contains characters XML cannot represent", expression=path
    )


def _parse_div(text: Any, path: str) -> etree._Element:
    if not isinstance(text, str):
        raise FhirError("structure", f"{path} must be a string", expression=path)
    div = _parse(text, f"XHTML in {path}", path)
    if div.tag != _DIV_TAG:
        raise FhirError(
            "structure",
            f"{path} must be a <div> element in the XHTML namespace {XHTML_NS}",
            expression=path,
        )
    return div


def _format_string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise FhirError("value", f"{path} must be a JSON string", expression=path)
    return value


def _format_boolean(value: Any, path: str) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise FhirError("value", f"{path} must be a JSON boolean", expression=path)


def _format_integer(value: Any, path: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FhirError("value", f"{path} must be a JSON integer", expression=path)


def _format_decimal(value: Any, path: str) -> str:
    """Decimal text that keeps precision: a FhirDecimal's own text, a Decimal's digits,
    a float's shortest round-tripping form."""
    text: str | None = None
    if isinstance(value, decimal.Decimal):
        text = str(value) if value.is_finite() else None
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float) and math.isfinite(value):
        text = repr(value)
    if text is None or not DECIMAL_TEXT.fullmatch(text):
        raise FhirError("value", f"{path} must be a JSON number", expression=path)
    return text


_FORMATTERS: dict[str, Callable[[Any, str], str]] = {
    "boolean": _format_boolean,
    "integer": _format_integer,
    "unsignedInt": _format_integer,
    "positiveInt": _format_integer,
    "decimal": _format_decimal,
}
