#!/usr/bin/env python3
"""An OTLP trace receiver for wirespan's tests and bench, built on PyPI's
opentelemetry-proto and grpcio: an implementation we did not write decodes
what the agent sends.

Usage: receiver.py [--grpc-port N] [--http-port N] [--output FILE]
                   [--no-span-records] [--fail N] [--retry-after S] [--hang]

One process serves both OTLP transports on 127.0.0.1:
  gRPC   opentelemetry.proto.collector.trace.v1.TraceService/Export, with the
         service name and method from opentelemetry-proto's generated
         trace_service_pb2_grpc; the request is decoded with
         ExportTraceServiceRequest.FromString.
  HTTP   POST to any path (the OTLP default is /v1/traces), protobuf body,
         `Content-Encoding: gzip` supported.
Port 0 (the default) lets the kernel choose. Once both listen, ONE JSON line
goes to stdout: {"grpc_port": N, "http_port": N, "pid": N, "versions": {...}}.
A port that cannot be bound is an error (exit 1); grpcio's SO_REUSEPORT is
off, so a port in use is not silently shared.

Decoding is strict: a request with fields the opentelemetry-proto schema
does not know (kept by protobuf as unknown fields) is a decode error.

Records, one JSON object per line, to --output (default stdout, after the
ports line), flushed after every export call:
  {"record": "export", "seq": n, "protocol": "grpc"|"http", "path": ...,
   "gzip": bool, "content_type": ..., "headers": {lowercase name: value},
   "outcome": "ok"|"rejected"|"hung"|"decode_error", "spans": n,
   "bytes": wire bytes, "received_unix_nano": int, "error": msg (if any),
   "span_ids": [hex, ...] (calls not accepted only)}
  {"record": "hang_end", "seq": n, "protocol": ..., "how": "client_gone"|
   "released", "hung_ns": how long the call hung, "ended_unix_nano": int}
  {"record": "span", "seq": n, "protocol": ..., "gzip": ..., "headers": ...,
   "trace_id": hex, "trace_id_bytes": 16, "span_id": hex, "span_id_bytes": 8,
   "parent_span_id": hex, "kind": "SPAN_KIND_SERVER", "name": ...,
   "start_time_unix_nano": int, "end_time_unix_nano": int,
   "attributes": {key: typed value}, "status_code": "STATUS_CODE_UNSET",
   "status_message": ..., "resource": {key: typed value},
   "scope": {"name": ..., "version": ...}}
Span records are written for accepted calls only (the ones answered with
success); --no-span-records keeps only export records (for the bench).
Typed values: int for int_value, str, bool, float for double_value.

gzip over gRPC: grpcio hides the `grpc-encoding` header from handlers, so the
server runs with per-message decompression off and a raw-bytes handler; a
message that starts with the gzip magic is gunzipped here (a valid
ExportTraceServiceRequest never starts with byte 0x1f: field 3, wire type 7).

Failure modes:
  --fail N --retry-after S  the first N export calls are refused: HTTP 503
      with `Retry-After: S` and a google.rpc.Status body; gRPC UNAVAILABLE
      with a google.rpc.RetryInfo (retry_delay S) in grpc-status-details-bin.
  --hang  export calls are accepted and never answered, until the client
      gives up; when hang is switched off, the calls still waiting are
      refused (503 / UNAVAILABLE). Spans of a hung call are never accepted.
To simulate a collector that is down at start, start the receiver late on
fixed ports.

Control (HTTP port): GET /_receiver/stats -> JSON counters;
POST /_receiver/control with JSON {"fail": N, "retry_after": S, "hang": bool}
changes the failure modes at run time (fields optional).

SIGTERM/SIGINT: stop both servers, flush, exit 0.
"""
import argparse
import gzip
import importlib.metadata
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode_otlp_json import summarize  # noqa: E402  (same directory)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
CONTROL_PREFIX = "/_receiver/"
GZIP_MAGIC = b"\x1f\x8b"
MAX_MESSAGE = 64 * 1024 * 1024

# The method the generated stub calls: a check that SERVICE is what
# opentelemetry-proto's trace_service_pb2_grpc serves.
assert (
    trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
    == SERVICE
)
assert hasattr(trace_service_pb2_grpc, "TraceServiceServicer")


def rpc_messages():
    """google.rpc.Status and google.rpc.RetryInfo, built with protobuf's own
    descriptor API (googleapis-common-protos is not installed)."""
    pool = descriptor_pool.DescriptorPool()
    for dep in (any_pb2, duration_pb2):
        pool.AddSerializedFile(dep.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="wirespan_receiver/google_rpc.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    status = fdp.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    status.field.add(
        name="message", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL
    )
    status.field.add(
        name="details",
        number=3,
        type=f.TYPE_MESSAGE,
        type_name=".google.protobuf.Any",
        label=f.LABEL_REPEATED,
    )
    retry = fdp.message_type.add(name="RetryInfo")
    retry.field.add(
        name="retry_delay",
        number=1,
        type=f.TYPE_MESSAGE,
        type_name=".google.protobuf.Duration",
        label=f.LABEL_OPTIONAL,
    )
    pool.Add(fdp)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("google.rpc.Status")),
        get(pool.FindMessageTypeByName("google.rpc.RetryInfo")),
    )


RpcStatus, RetryInfo = rpc_messages()
UNAVAILABLE = 14  # google.rpc.Code.UNAVAILABLE


def unavailable_status(retry_after):
    """A serialized google.rpc.Status: UNAVAILABLE with a RetryInfo."""
    retry = RetryInfo()
    retry.retry_delay.seconds = int(retry_after)
    st = RpcStatus(code=UNAVAILABLE, message="receiver: refusing on purpose (--fail)")
    st.details.add(
        type_url="type.googleapis.com/google.rpc.RetryInfo",
        value=retry.SerializeToString(),
    )
    return st.SerializeToString()


class Receiver:
    """State shared by both servers: failure modes, counters, the output."""

    def __init__(self, out, span_records, fail, retry_after, hang):
        self.lock = threading.RLock()
        self.out = out
        self.span_records = span_records
        self.fail = fail
        self.retry_after = retry_after
        self.hang = hang
        self.unhang = threading.Event()
        self.seq = 0
        self.stats = {
            "export_calls": 0,
            "accepted_calls": 0,
            "rejected_calls": 0,
            "hung_calls": 0,
            "decode_errors": 0,
            "spans_accepted": 0,
            "spans_rejected": 0,
            "grpc_calls": 0,
            "http_calls": 0,
            "gzip_calls": 0,
            "last_accepted_unix_nano": 0,
        }

    def decide(self):
        """The fate of the next export call: (seq, "ok"|"rejected"|"hung")."""
        with self.lock:
            self.seq += 1
            if self.hang:
                return self.seq, "hung"
            if self.fail > 0:
                self.fail -= 1
                return self.seq, "rejected"
            return self.seq, "ok"

    def control(self, change):
        with self.lock:
            if "fail" in change:
                self.fail = int(change["fail"])
            if "retry_after" in change:
                self.retry_after = int(change["retry_after"])
            if "hang" in change:
                self.hang = bool(change["hang"])
                if self.hang:
                    self.unhang.clear()
                else:
                    self.unhang.set()
            return self.snapshot()

    def snapshot(self):
        return dict(
            self.stats,
            fail_remaining=self.fail,
            retry_after=self.retry_after,
            hang=self.hang,
        )

    def record(self, meta, outcome, raw, error=None):
        """Decodes `raw` (already gunzipped), records the call and, when it is
        accepted, its spans. Returns the decode error message, if any."""
        spans = []
        count = 0
        if error is None:
            try:
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
                # Strict: binary parsing keeps fields the schema does not
                # have as unknown fields; any of them is an error here.
                known = trace_service_pb2.ExportTraceServiceRequest()
                known.CopyFrom(request)
                known.DiscardUnknownFields()
                if known.ByteSize() != request.ByteSize():
                    raise ValueError(
                        f"{request.ByteSize() - known.ByteSize()} bytes of fields "
                        "unknown to opentelemetry-proto's ExportTraceServiceRequest"
                    )
                if self.span_records or outcome != "ok":
                    summarize(request, spans)
                    count = len(spans)
                else:
                    # Counting is enough (the bench): no per-span Python work.
                    count = sum(
                        len(ss.spans)
                        for rs in request.resource_spans
                        for ss in rs.scope_spans
                    )
            except Exception as e:  # protobuf raises DecodeError and others
                error = f"{type(e).__name__}: {e}"
        if error is not None:
            outcome = "decode_error"
        export = dict(
            meta,
            record="export",
            outcome=outcome,
            spans=count,
            received_unix_nano=time.time_ns(),
        )
        if error is not None:
            export["error"] = error
        if outcome != "ok":
            # Which spans a refused or hung call carried, to follow retries.
            export["span_ids"] = [sp["span_id"] for sp in spans]
        lines = [json.dumps(export)]
        if outcome == "ok" and self.span_records:
            common = {
                k: meta[k] for k in ("seq", "protocol", "path", "gzip", "headers")
            }
            lines.extend(json.dumps(dict(common, record="span", **s)) for s in spans)
        with self.lock:
            st = self.stats
            st["export_calls"] += 1
            st[f"{meta['protocol']}_calls"] += 1
            st["gzip_calls"] += int(bool(meta["gzip"]))
            if outcome == "ok":
                st["accepted_calls"] += 1
                st["spans_accepted"] += count
                st["last_accepted_unix_nano"] = time.time_ns()
            elif outcome == "rejected":
                st["rejected_calls"] += 1
                st["spans_rejected"] += count
            elif outcome == "hung":
                st["hung_calls"] += 1
            else:
                st["decode_errors"] += 1
            self.write(lines)
        return error

    def write(self, lines):
        with self.lock:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()

    def hang_ended(self, meta, started_ns, how):
        """Records the end of a hung call: `how` is "client_gone" (the client
        gave up: deadline, cancellation, closed connection) or "released"."""
        now = time.time_ns()
        self.write(
            [
                json.dumps(
                    {
                        "record": "hang_end",
                        "seq": meta["seq"],
                        "protocol": meta["protocol"],
                        "how": how,
                        "hung_ns": now - started_ns,
                        "ended_unix_nano": now,
                    }
                )
            ]
        )


def gunzip_if_gzip(raw):
    """(bytes, was_gzip, error)."""
    if raw[:2] != GZIP_MAGIC:
        return raw, False, None
    try:
        return gzip.decompress(raw), True, None
    except (OSError, EOFError, zlib.error) as e:
        return b"", True, f"bad gzip: {e}"


# ---------------------------------------------------------------- gRPC


class GrpcStatus(grpc.Status):
    def __init__(self, code, details, trailing_metadata):
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def grpc_export(receiver):
    def export(raw, context):
        seq, outcome = receiver.decide()
        headers = {}
        for md in context.invocation_metadata():
            value = md.value
            if isinstance(value, bytes):
                value = value.hex()
            headers[md.key.lower()] = value
        data, was_gzip, error = gunzip_if_gzip(raw)
        meta = {
            "seq": seq,
            "protocol": "grpc",
            "path": f"/{SERVICE}/Export",
            "gzip": was_gzip,
            "content_type": "application/grpc",
            "headers": headers,
            "bytes": len(raw),
        }
        error = receiver.record(meta, outcome, data, error)
        if error is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        if outcome == "rejected":
            context.abort_with_status(
                GrpcStatus(
                    grpc.StatusCode.UNAVAILABLE,
                    "receiver: refusing on purpose (--fail)",
                    (
                        (
                            "grpc-status-details-bin",
                            unavailable_status(receiver.retry_after),
                        ),
                    ),
                )
            )
        if outcome == "hung":
            # Never answer: wait until the client gives up (deadline,
            # cancellation) or hang is switched off, then refuse (the client
            # retries; spans of a hung call are never accepted).
            started = time.time_ns()
            while context.is_active() and not receiver.unhang.wait(0.05):
                pass
            active = context.is_active()
            receiver.hang_ended(meta, started, "released" if active else "client_gone")
            if active:
                context.abort(grpc.StatusCode.UNAVAILABLE, "receiver: hang released")
            return b""
        return trace_service_pb2.ExportTraceServiceResponse().SerializeToString()

    return export


def start_grpc(receiver, port):
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            # Raw bytes in and out: this handler decodes (and gunzips) itself.
            "Export": grpc.unary_unary_rpc_method_handler(
                grpc_export(receiver),
                request_deserializer=None,
                response_serializer=None,
            )
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="grpc"),
        handlers=[handler],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.per_message_decompression", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ],
    )
    try:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    except RuntimeError as e:
        raise SystemExit(f"receiver: cannot bind gRPC on 127.0.0.1:{port}: {e}")
    if bound == 0:
        raise SystemExit(f"receiver: cannot bind gRPC on 127.0.0.1:{port}")
    server.start()
    return server, bound


# ---------------------------------------------------------------- HTTP


class HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "wirespan-otlp-receiver"
    receiver = None  # set by start_http

    def log_message(self, fmt, *args):
        pass

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, code, body=b"", content_type="application/x-protobuf", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self):
        if self.path == CONTROL_PREFIX + "stats":
            with self.receiver.lock:
                body = json.dumps(self.receiver.snapshot()).encode()
            self.reply(200, body, "application/json")
        else:
            self.reply(404, b"not found\n", "text/plain")

    def do_POST(self):
        receiver = self.receiver
        raw = self.read_body()
        if self.path == CONTROL_PREFIX + "control":
            try:
                change = json.loads(raw or b"{}")
            except ValueError as e:
                self.reply(400, f"bad JSON: {e}\n".encode(), "text/plain")
                return
            self.reply(200, json.dumps(receiver.control(change)).encode(), "application/json")
            return
        seq, outcome = receiver.decide()
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        error = None
        data = raw
        if encoding == "gzip":
            try:
                data = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as e:
                error = f"bad gzip body: {e}"
        elif encoding not in ("", "identity"):
            error = f"unsupported Content-Encoding {encoding!r}"
        content_type = self.headers.get("Content-Type") or ""
        if error is None and content_type.split(";")[0].strip() != "application/x-protobuf":
            error = f"Content-Type {content_type!r}, want application/x-protobuf"
        meta = {
            "seq": seq,
            "protocol": "http",
            "path": self.path,
            "gzip": encoding == "gzip",
            "content_type": content_type,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "bytes": len(raw),
        }
        error = receiver.record(meta, outcome, data, error)
        if error is not None:
            body = RpcStatus(code=3, message=error).SerializeToString()
            self.reply(400, body)
        elif outcome == "rejected":
            self.reply(
                503,
                unavailable_status(receiver.retry_after),
                extra=[("Retry-After", str(receiver.retry_after))],
            )
        elif outcome == "hung":
            started = time.time_ns()
            how = self.hang()
            receiver.hang_ended(meta, started, how)
        else:
            self.reply(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    def hang(self):
        """Never answer: wait until the client closes the connection or hang
        is switched off (then answer 503: spans of a hung call are never
        accepted; the client retries)."""
        sock = self.connection
        while not self.receiver.unhang.is_set():
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                try:
                    gone = sock.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone:
                    self.close_connection = True
                    return "client_gone"
        self.reply(503, extra=[("Retry-After", "0")])
        return "released"


class QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def handle_error(self, request, client_address):
        # A client that gave up mid-request is expected in these tests.
        pass


def start_http(receiver, port):
    handler = type("Handler", (HttpHandler,), {"receiver": receiver})
    try:
        server = QuietHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        raise SystemExit(f"receiver: cannot bind HTTP on 127.0.0.1:{port}: {e}")
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return server, server.server_address[1]


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grpc-port", type=int, default=0)
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--output", default="-", help="record file ('-': stdout)")
    p.add_argument("--no-span-records", action="store_true")
    p.add_argument("--fail", type=int, default=0, metavar="N")
    p.add_argument("--retry-after", type=int, default=1, metavar="S")
    p.add_argument("--hang", action="store_true")
    args = p.parse_args()

    out = sys.stdout if args.output == "-" else open(args.output, "a", buffering=1)
    receiver = Receiver(
        out, not args.no_span_records, args.fail, args.retry_after, args.hang
    )
    grpc_server, grpc_port = start_grpc(receiver, args.grpc_port)
    http_server, http_port = start_http(receiver, args.http_port)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    versions = {
        name: importlib.metadata.version(name)
        for name in ("opentelemetry-proto", "protobuf", "grpcio")
    }
    print(
        json.dumps(
            {
                "grpc_port": grpc_port,
                "http_port": http_port,
                "pid": os.getpid(),
                "versions": versions,
            }
        ),
        flush=True,
    )
    print(
        f"receiver: OTLP/gRPC on 127.0.0.1:{grpc_port}, OTLP/HTTP on "
        f"127.0.0.1:{http_port} ({versions})",
        file=sys.stderr,
        flush=True,
    )
    while not stop.wait(3600):
        pass
    receiver.unhang.set()
    http_server.shutdown()
    grpc_server.stop(grace=1).wait()
    with receiver.lock:
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
