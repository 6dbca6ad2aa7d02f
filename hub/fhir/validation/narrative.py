"""Narrative XHTML (`Resource.text.div`) as FHIR R4 allows it (narrative.html, invariants txt-1
and txt-2), checked the same way whether the resource came as JSON or XML.

This is a security rule as much as a conformance one: the hub's pages show narratives, so a
narrative the hub stores must not carry anything a browser would run or fetch on its own. Allowed:
one outer `div` in the XHTML namespace holding only the basic formatting elements of HTML 4.0
chapters 7-11 (less section 9.4, ins/del) and 15, `a` (name or href), images, tables and lists,
with their plain attributes and inline `style`. Refused: scripts, forms, objects, frames,
`head`/`body`/`link`/`base`, any `on…` event attribute, DOCTYPE and entities other than XML's
own five, processing instructions, elements outside the XHTML namespace, and (beyond the letter
of R4, because a page would follow them) `javascript:`/`vbscript:` URLs and CSS `expression()`.
"""
from __future__ import annotations

import re
import threading

from lxml import etree

from hub.fhir.errors import Issue

XHTML_NS = "http://www.w3.org/1999/xhtml"
_XML_NS = "http://www.w3.org/XML/1998/namespace"

# HTML 4.0 chapters 7 (structure), 8 (bdo), 9 (text, less ins/del), 10 (lists), 11 (tables),
# 15 (font style, hr), plus a, img, map and area.
ALLOWED_ELEMENTS = frozenset({
    "div", "span", "h1", "h2", "h3", "h4", "h5", "h6", "address", "bdo",
    "p", "br", "pre", "blockquote", "q", "em", "strong", "dfn", "code", "samp", "kbd", "var", "cite",
    "abbr", "acronym", "sub", "sup",
    "ul", "ol", "li", "dl", "dt", "dd",
    "table", "caption", "thead", "tfoot", "tbody", "colgroup", "col", "tr", "th", "td",
    "tt", "i", "b", "big", "small", "hr",
    "a", "img", "map", "area",
})
_COMMON_ATTRIBUTES = frozenset({"id", "class", "style", "title", "lang", "dir", "accesskey", "tabindex"})
_ELEMENT_ATTRIBUTES = {
    "a": {"href", "name", "hreflang", "type", "rel", "rev", "charset", "shape", "coords", "target"},
    "img": {"src", "alt", "longdesc", "height", "width", "usemap", "ismap", "border", "hspace", "vspace", "align"},
    "area": {"shape", "coords", "href", "nohref", "alt"},
    "map": {"name"},
    "table": {"summary", "width", "border", "frame", "rules", "cellspacing", "cellpadding", "align", "bgcolor"},
    "col": {"span", "width", "align", "char", "charoff", "valign"},
    "colgroup": {"span", "width", "align", "char", "charoff", "valign"},
    "th": {"abbr", "axis", "headers", "scope", "rowspan", "colspan", "align", "char", "charoff", "valign",
           "nowrap", "bgcolor", "width", "height"},
    "td": {"abbr", "axis", "headers", "scope", "rowspan", "colspan", "align", "char", "charoff", "valign",
           "nowrap", "bgcolor", "width", "height"},
    "tr": {"align", "char", "charoff", "valign", "bgcolor"},
    "thead": {"align", "char", "charoff", "valign"},
    "tbody": {"align", "char", "charoff", "valign"},
    "tfoot": {"align", "char", "charoff", "valign"},
    "blockquote": {"cite"},
    "q": {"cite"},
    "ol": {"start", "type", "compact"},
    "ul": {"type", "compact"},
    "li": {"value", "type"},
    "pre": {"width"},
    "br": {"clear"},
    "hr": {"align", "noshade", "size", "width"},
    "caption": {"align"},
    "div": {"align"}, "p": {"align"},
    "h1": {"align"}, "h2": {"align"}, "h3": {"align"}, "h4": {"align"}, "h5": {"align"}, "h6": {"align"},
}
_SCRIPT_URL = re.compile(r"^\s*(javascript|vbscript|livescript|data\s*:\s*text/html)\s*:?", re.IGNORECASE)
_SCRIPT_STYLE = re.compile(r"expression\s*\(|javascript\s*:|vbscript\s*:|-moz-binding|behavior\s*:", re.IGNORECASE)

_local = threading.local()


def _parser() -> etree.XMLParser:
    """Entities unresolved, no DTD, no network, comments dropped, processing instructions kept
    (to refuse them); one per thread, as lxml parsers are not thread-safe."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False,
            remove_comments=True, remove_pis=False, collect_ids=False)
    return parser


def check_div(text: str, where: str) -> list[Issue]:
    """Issues with one narrative div (empty when it is allowed). `where` is its FHIRPath."""
    try:
        root = etree.fromstring(text.encode(), _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        reason = getattr(exc, "msg", None) or str(exc)
        return [Issue("structure", f"{where}: the narrative is not well-formed XHTML ({reason})", where)]
    if root.getroottree().docinfo.doctype:
        return [_txt1(where, "a DOCTYPE declaration is not allowed in a narrative")]
    if root.tag != f"{{{XHTML_NS}}}div":
        return [_txt1(where, f"the narrative must be one <div> in the XHTML namespace {XHTML_NS}")]
    issues: list[Issue] = []
    content = False
    for node in root.iter():
        if isinstance(node, etree._Entity):
            issues.append(_txt1(where, f"the entity &{node.name}; is not allowed (only XML's own five)"))
            continue
        if isinstance(node, etree._ProcessingInstruction):
            issues.append(_txt1(where, "processing instructions are not allowed"))
            continue
        if not isinstance(node.tag, str):
            continue
        namespace, _, name = node.tag[1:].partition("}") if node.tag.startswith("{") else ("", "", node.tag)
        if namespace != XHTML_NS:
            issues.append(_txt1(where, f"<{name}> is not in the XHTML namespace (found '{namespace or 'none'}')"))
            continue
        if name not in ALLOWED_ELEMENTS:
            issues.append(_txt1(where, f"the element <{name}> is not allowed in a narrative"))
            continue
        issues.extend(_attribute_issues(node, name, where))
        if not content and ((node.text and not node.text.isspace()) or (node.tail and not node.tail.isspace()
                                                                       and node is not root) or name == "img"):
            content = True
    if not content and not issues:
        issues.append(Issue("invariant", f"{where}: rule txt-2 failed: the narrative SHALL have some "
                            "non-whitespace content", where))
    return issues


def _attribute_issues(node: etree._Element, name: str, where: str) -> list[Issue]:
    issues = []
    allowed = _ELEMENT_ATTRIBUTES.get(name, ())
    for attribute, value in node.attrib.items():
        if attribute.startswith("{"):
            namespace, _, local = attribute[1:].partition("}")
            if namespace == _XML_NS and local in ("lang", "space"):
                continue
            issues.append(_txt1(where, f"the attribute {local} in namespace {namespace} is not allowed on <{name}>"))
            continue
        lowered = attribute.lower()
        if lowered.startswith("on"):
            issues.append(_txt1(where, f"the event attribute {attribute} is not allowed on <{name}>"))
        elif lowered not in _COMMON_ATTRIBUTES and lowered not in allowed:
            issues.append(_txt1(where, f"the attribute {attribute} is not allowed on <{name}>"))
        elif lowered in ("href", "src", "longdesc", "cite", "usemap") and _SCRIPT_URL.match(value):
            issues.append(_txt1(where, f"<{name} {attribute}> names a script URL"))
        elif lowered == "style" and _SCRIPT_STYLE.search(value):
            issues.append(_txt1(where, f"<{name} style> holds a script"))
    return issues


def _txt1(where: str, reason: str) -> Issue:
    return Issue("invariant", f"{where}: rule txt-1 failed: {reason} (the narrative SHALL contain only the "
                 "basic HTML formatting elements and attributes)", where)
