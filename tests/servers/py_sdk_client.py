#!/usr/bin/env python3
"""An OpenTelemetry-SDK-instrumented HTTP client for the wirespan
trace-context tests.

Usage: PYTHON-WITH-SDK py_sdk_client.py URL...

Needs PyPI's `opentelemetry-sdk` and `opentelemetry-instrumentation-urllib`
(tests/src/chain.rs: SDK_PIP_PACKAGES). The SDK records spans in memory (no
exporter process); the urllib instrumentation injects one `traceparent` into
each request, carrying its CLIENT span's id.

Waits for one line on stdin (so the test can start tracing first), then, for
each URL: opens an SDK span "sdk-request" (INTERNAL), GETs the URL with
urllib inside it (no proxy), and prints one JSON line:
  {"url", "status", "trace_id", "client_span_id", "trace_flags",
   "client_parent_id",
   "received": the server's X-Received-Context header, parsed, or null}
Ids are lower-case hex, as on the wire.
"""
import json
import sys
import urllib.error
import urllib.request

from opentelemetry import trace
from opentelemetry.instrumentation.urllib import URLLibInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind


def main():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    URLLibInstrumentor().instrument()
    tracer = trace.get_tracer("wirespan-tests")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    print("WAITING", flush=True)
    sys.stdin.readline()
    for url in sys.argv[1:]:
        exporter.clear()
        with tracer.start_as_current_span("sdk-request"):
            try:
                with opener.open(url, timeout=30) as resp:
                    status, headers = resp.status, resp.headers
                    resp.read()
            except urllib.error.HTTPError as err:
                status, headers = err.code, err.headers
                err.read()
        clients = [
            s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT
        ]
        if len(clients) != 1:
            print(
                json.dumps({"url": url, "error": "%d SDK client spans" % len(clients)}),
                flush=True,
            )
            continue
        span = clients[0]
        received = headers.get("X-Received-Context")
        print(
            json.dumps(
                {
                    "url": url,
                    "status": status,
                    "trace_id": format(span.context.trace_id, "032x"),
                    "client_span_id": format(span.context.span_id, "016x"),
                    "trace_flags": format(int(span.context.trace_flags), "02x"),
                    "client_parent_id": format(span.parent.span_id, "016x")
                    if span.parent
                    else "",
                    "received": json.loads(received) if received else None,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
