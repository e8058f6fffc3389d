#!/usr/bin/env python3
"""Decode wirespan's OTLP/JSON with PyPI's opentelemetry-proto + protobuf.

Usage: decode_otlp_json.py < stdout-of-wirespan--print-json

Reads one OTLP/JSON ExportTraceServiceRequest per stdin line (empty lines are
skipped), parses each with google.protobuf.json_format.Parse into the
opentelemetry-proto message, strictly (ignore_unknown_fields=False), and
prints ONE JSON summary on stdout, read back from the protobuf messages:

  {"versions": {"opentelemetry-proto": ..., "protobuf": ...},
   "ignore_unknown_fields": false,
   "requests": <lines parsed>,
   "spans": [{"trace_id": hex, "trace_id_bytes": 16, "span_id": hex,
              "span_id_bytes": 8, "parent_span_id": hex,
              "kind": "SPAN_KIND_SERVER", "name": ...,
              "start_time_unix_nano": int, "end_time_unix_nano": int,
              "attributes": {key: value}, "status_code": "STATUS_CODE_UNSET",
              "status_message": ..., "resource": {key: value},
              "scope": {"name": ..., "version": ...}}, ...]}

Attribute values: int for int_value, str for string_value, bool, float;
anything else as {"<oneof field>": MessageToDict(...)}.

The one transformation before Parse: OTLP/JSON deviates from the standard
protobuf JSON mapping for trace and span ids. The OTLP specification
("JSON Protobuf Encoding") requires traceId, spanId and parentSpanId (and the
ids of span links) to be hex strings, whereas json_format reads every bytes
field as base64. A hex string is also valid base64, so parsing it unchanged
would "succeed" with 24-byte trace ids and 12-byte span ids. Those fields are
therefore converted from hex to base64 first; a value that is not a hex string
is an error, not passed through.

Exits 1 with a message on stderr on the first line that does not decode.
"""
import base64
import importlib.metadata
import json
import re
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1 import trace_pb2

# Strict: a field we emit that this opentelemetry-proto does not know fails
# the parse. (Nothing we emit needs leniency with opentelemetry-proto 1.45.2.)
IGNORE_UNKNOWN_FIELDS = False

ID_FIELDS = ("traceId", "spanId", "parentSpanId")
HEX = re.compile(r"[0-9a-fA-F]*")


class DecodeError(Exception):
    pass


def hex_to_base64(where, value):
    if not isinstance(value, str):
        raise DecodeError(f"{where}: expected a hex string, got {value!r}")
    # bytes.fromhex alone would also accept spaces.
    if not HEX.fullmatch(value) or len(value) % 2:
        raise DecodeError(f"{where}: not a hex string: {value!r}")
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def ids_to_base64(where, obj):
    for field in ID_FIELDS:
        if field in obj:
            obj[field] = hex_to_base64(f"{where}.{field}", obj[field])


def rewrite_ids(request):
    """Hex ids -> base64, in place, for every span and span link."""
    for i, rs in enumerate(request.get("resourceSpans") or []):
        for j, ss in enumerate(rs.get("scopeSpans") or []):
            for k, span in enumerate(ss.get("spans") or []):
                where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                ids_to_base64(where, span)
                for n, link in enumerate(span.get("links") or []):
                    ids_to_base64(f"{where}.links[{n}]", link)


def any_value(v):
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return int(v.int_value)
    if which == "bool_value":
        return bool(v.bool_value)
    if which == "double_value":
        return float(v.double_value)
    if which is None:
        return None
    return {which: json_format.MessageToDict(getattr(v, which))}


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def summarize(request, out):
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = {"name": ss.scope.name, "version": ss.scope.version}
            for span in ss.spans:
                out.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "trace_id_bytes": len(span.trace_id),
                        "span_id": span.span_id.hex(),
                        "span_id_bytes": len(span.span_id),
                        "parent_span_id": span.parent_span_id.hex(),
                        "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                        "name": span.name,
                        "start_time_unix_nano": int(span.start_time_unix_nano),
                        "end_time_unix_nano": int(span.end_time_unix_nano),
                        "attributes": attributes(span.attributes),
                        "status_code": trace_pb2.Status.StatusCode.Name(
                            span.status.code
                        ),
                        "status_message": span.status.message,
                        "resource": resource,
                        "scope": scope,
                    }
                )


def main():
    spans = []
    requests = 0
    for lineno, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise DecodeError("not a JSON object")
            rewrite_ids(obj)
            request = json_format.Parse(
                json.dumps(obj),
                ExportTraceServiceRequest(),
                ignore_unknown_fields=IGNORE_UNKNOWN_FIELDS,
            )
        except (ValueError, DecodeError, json_format.ParseError) as e:
            print(
                f"line {lineno}: not a valid OTLP/JSON ExportTraceServiceRequest: "
                f"{type(e).__name__}: {e}\n{line.rstrip()}",
                file=sys.stderr,
            )
            return 1
        requests += 1
        summarize(request, spans)
    summary = {
        "versions": {
            "opentelemetry-proto": importlib.metadata.version("opentelemetry-proto"),
            "protobuf": importlib.metadata.version("protobuf"),
        },
        "ignore_unknown_fields": IGNORE_UNKNOWN_FIELDS,
        "requests": requests,
        "spans": spans,
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
