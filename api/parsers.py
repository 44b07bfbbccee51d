"""The API's request body parser."""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    """A JSONParser that raises ParseError for JSON nested too deeply to parse.

    Python's json module parses nested arrays and objects recursively, so a
    body such as `[[[[...]]]]` with tens of thousands of levels raises
    RecursionError. The API then returns 400 `malformed_request`, as for
    any other invalid JSON, instead of a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError(
                "JSON parse error: the body is nested too deeply. Send a JSON "
                "object with fewer levels of nesting."
            ) from exc
