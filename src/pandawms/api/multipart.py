"""multipart/form-data bodies (file uploads such as panda-client's sandbox), parsed in memory.

The whole body is already bounded by ``max_body_bytes`` before it gets here, so parsing into
memory is safe; parts are checked for names and count.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header

from pandawms.model.errors import PandaError

MAX_PARTS = 100


@dataclass(frozen=True)
class UploadedFile:
    """One uploaded file: the client's file name and the bytes."""

    filename: str
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> dict[str, str | UploadedFile]:
    """Fields as text and files as :class:`UploadedFile`, by part name."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise PandaError("multipart body without a boundary")
    parts: list[dict[str, object]] = []
    current: dict[str, object] = {}
    header_name = b""
    header_value = b""

    def on_part_begin() -> None:
        current.clear()
        current.update(headers={}, data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        nonlocal header_name
        header_name += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        nonlocal header_value
        header_value += data[start:end]

    def on_header_end() -> None:
        nonlocal header_name, header_value
        headers = current["headers"]
        assert isinstance(headers, dict)
        headers[header_name.decode("latin-1").lower()] = header_value.decode("utf-8", "replace")
        header_name, header_value = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        buffer = current["data"]
        assert isinstance(buffer, bytearray)
        buffer.extend(data[start:end])

    def on_part_end() -> None:
        if len(parts) >= MAX_PARTS:
            raise PandaError(f"multipart body has more than {MAX_PARTS} parts")
        parts.append(dict(current))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except PandaError:
        raise
    except Exception as exc:  # noqa: BLE001 - the parser raises several types for malformed input
        raise PandaError(f"malformed multipart body: {exc}") from None
    out: dict[str, str | UploadedFile] = {}
    for part in parts:
        headers = part["headers"]
        assert isinstance(headers, dict)
        _, disposition = parse_options_header(headers.get("content-disposition", ""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise PandaError("multipart part without a name")
        raw = part["data"]
        assert isinstance(raw, bytearray)
        data = bytes(raw)
        if b"filename" in disposition:
            out[name] = UploadedFile(disposition[b"filename"].decode("utf-8", "replace"), data)
        else:
            out[name] = data.decode("utf-8", "replace")
    return out
