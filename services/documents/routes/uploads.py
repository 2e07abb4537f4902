"""The request body of an upload, as the OpenAPI document describes it. The body is read
as a stream (`Request.stream()`), never spooled by the framework, so it is declared here."""

from typing import Any

from shared.openapi import error_responses


def multipart_body(*, with_title: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "The file: PDF, text, Markdown, HTML, DOCX, CSV or JSON",
        }
    }
    if with_title:
        properties["title"] = {"type": "string", "maxLength": 300}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"], "properties": properties}
                }
            },
        }
    }


UPLOAD_ERRORS = error_responses(413, 415)
