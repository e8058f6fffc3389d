// HTTP/1.1 forwarder for the wirespan trace-context tests: JDK only, no
// tracing library (an "unmodified service").
//
// Usage: java -cp DIR Forwarder PORT UPSTREAM [THREADS]
//
// com.sun.net.httpserver.HttpServer with a fixed thread pool as its
// executor (THREADS, default 16): each request is read, handled, and
// forwarded by one pool thread, the thread-per-request model the agent links
// in-process. The upstream request goes through HttpURLConnection (no proxy;
// the JDK keeps idle upstream connections alive and reuses them).
//
// Every request (any method, its body too) is sent to UPSTREAM + path and
// the upstream's status and body are returned as they are (a 404 upstream is
// a 404 here; an unreachable upstream is a 502). No request header is
// forwarded. Every response carries `X-Received-Context`, a JSON object with
// the `traceparent` and `tracestate` header lines this hop received, as
// tests/servers/py_forwarder.py does.
//
// The test harness compiles this file with `javac` (tests/src/chain.rs).

import com.sun.net.httpserver.Headers;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Proxy;
import java.net.URI;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.Executors;

public final class Forwarder {
    private Forwarder() {}

    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(args[0]);
        String upstream = args[1].replaceAll("/+$", "");
        int threads = args.length > 2 ? Integer.parseInt(args[2]) : 16;
        HttpServer server =
                HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 256);
        server.createContext("/", exchange -> {
            try {
                handle(exchange, upstream);
            } catch (IOException | RuntimeException e) {
                System.err.println("forwarder: " + e);
            } finally {
                exchange.close();
            }
        });
        server.setExecutor(Executors.newFixedThreadPool(threads));
        server.start();
    }

    private static void handle(HttpExchange exchange, String upstream) throws IOException {
        String received = received(exchange);
        byte[] requestBody;
        try (InputStream in = exchange.getRequestBody()) {
            requestBody = in.readAllBytes();
        }
        int code;
        byte[] body;
        try {
            URI uri = exchange.getRequestURI();
            String target = upstream + uri.getRawPath()
                    + (uri.getRawQuery() == null ? "" : "?" + uri.getRawQuery());
            HttpURLConnection conn =
                    (HttpURLConnection) new URL(target).openConnection(Proxy.NO_PROXY);
            conn.setRequestMethod(exchange.getRequestMethod());
            conn.setConnectTimeout(30_000);
            conn.setReadTimeout(30_000);
            if (requestBody.length > 0) {
                conn.setDoOutput(true);
                conn.setFixedLengthStreamingMode(requestBody.length);
                try (OutputStream out = conn.getOutputStream()) {
                    out.write(requestBody);
                }
            }
            code = conn.getResponseCode();
            // Read the whole body (the error stream for 4xx/5xx), so the
            // JDK can reuse the upstream connection.
            InputStream in = code >= 400 ? conn.getErrorStream() : conn.getInputStream();
            if (in == null) {
                body = new byte[0];
            } else {
                try (in) {
                    body = in.readAllBytes();
                }
            }
        } catch (IOException e) {
            code = 502;
            body = ("upstream failed: " + e + "\n").getBytes(StandardCharsets.UTF_8);
        }
        Headers headers = exchange.getResponseHeaders();
        headers.set("Content-Type", "text/plain");
        headers.set("X-Received-Context", received);
        boolean noBody = exchange.getRequestMethod().equals("HEAD") || code == 204 || code == 304;
        // -1: no body; 0 would mean chunked.
        exchange.sendResponseHeaders(code, noBody || body.length == 0 ? -1 : body.length);
        if (!noBody && body.length > 0) {
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        }
    }

    /** {"path": ..., "traceparent": [...], "tracestate": [...]} for this request. */
    private static String received(HttpExchange exchange) {
        Headers h = exchange.getRequestHeaders();
        return "{\"path\": " + quote(exchange.getRequestURI().toString())
                + ", \"traceparent\": " + list(h.get("traceparent"))
                + ", \"tracestate\": " + list(h.get("tracestate")) + "}";
    }

    private static String list(List<String> values) {
        StringBuilder sb = new StringBuilder("[");
        if (values != null) {
            for (int i = 0; i < values.size(); i++) {
                if (i > 0) {
                    sb.append(", ");
                }
                sb.append(quote(values.get(i)));
            }
        }
        return sb.append(']').toString();
    }

    /** A JSON string literal, ASCII only. */
    private static String quote(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                sb.append('\\').append(c);
            } else if (c < 0x20 || c > 0x7e) {
                sb.append(String.format("\\u%04x", (int) c));
            } else {
                sb.append(c);
            }
        }
        return sb.append('"').toString();
    }
}
