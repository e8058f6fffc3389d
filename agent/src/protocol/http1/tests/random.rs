//! Property test: random well-formed conversations (pipelined or not, every
//! framing kind), split at random points, must pair exactly as generated.

use super::*;

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A Content-Length or chunked body of under `max` bytes, as header + framed bytes.
fn body(rng: &mut Rng, max: usize) -> (String, String) {
    let len = rng.below(max);
    let data: String = (0..len)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    if rng.below(2) == 0 {
        return (format!("Content-Length: {len}\r\n"), data);
    }
    let mut framed = String::new();
    let mut rest = data.as_str();
    while !rest.is_empty() {
        let n = (rng.below(40) + 1).min(rest.len());
        let ext = if rng.below(3) == 0 { ";x=\"y\"" } else { "" };
        framed += &format!("{n:X}{ext}\r\n{}\r\n", &rest[..n]);
        rest = &rest[n..];
    }
    framed += if rng.below(2) == 0 {
        "0\r\n\r\n"
    } else {
        "0\r\nX-Trailer: t\r\n\r\n"
    };
    ("Transfer-Encoding: chunked\r\n".into(), framed)
}

/// One exchange: (request bytes, response bytes, method, target, status).
fn exchange(rng: &mut Rng, i: usize) -> (String, String, String, String, u16) {
    let method = rng.pick(&["GET", "POST", "PUT", "HEAD", "DELETE", "PATCH"]);
    let target = format!("/r{i}/{}?q={}", rng.below(1000), rng.below(10));
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: svc\r\n");
    if rng.below(2) == 0 {
        req += "X-Pad: \t padded \r\n";
    }
    let (framing, data) = match method {
        "POST" | "PUT" | "PATCH" => body(rng, 200),
        _ => (String::new(), String::new()),
    };
    req += &format!("{framing}\r\n{data}");
    let status = match rng.below(6) {
        0 => 204,
        1 => 304,
        2 => 404,
        3 => 500,
        _ => 200,
    };
    let mut resp = String::new();
    if rng.below(5) == 0 {
        resp += "HTTP/1.1 100 Continue\r\n\r\n";
    }
    resp += &format!("HTTP/1.1 {status} Reason\r\nServer: s\r\n");
    if method == "HEAD" || status == 204 || status == 304 {
        resp += if rng.below(2) == 0 {
            "Content-Length: 42\r\n\r\n"
        } else {
            "\r\n"
        };
    } else {
        let (framing, data) = body(rng, 300);
        resp += &format!("{framing}\r\n{data}");
    }
    (req, resp, method.into(), target, status)
}

/// Feeds `data` in random pieces.
fn feed_pieces(h: &mut H, rng: &mut Rng, dir: Direction, data: &[u8]) {
    let mut pos = 0;
    while pos < data.len() {
        let n = match rng.below(4) {
            0 => 1,
            1 => rng.below(8) + 1,
            2 => rng.below(200) + 1,
            _ => data.len(),
        };
        let end = (pos + n).min(data.len());
        h.feed(dir, &data[pos..end]);
        pos = end;
    }
}

#[test]
fn random_conversations_pair_exactly() {
    for seed in 1..400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let n = rng.below(8) + 1;
        let exchanges: Vec<_> = (0..n).map(|i| exchange(&mut rng, i)).collect();
        let (req_dir, resp_dir) = if rng.below(2) == 0 {
            (IN, OUT)
        } else {
            (OUT, IN)
        };
        let mut h = H::new();
        if rng.below(2) == 0 {
            // Pipelined: all requests, then all responses.
            let reqs: String = exchanges.iter().map(|e| e.0.as_str()).collect();
            let resps: String = exchanges.iter().map(|e| e.1.as_str()).collect();
            feed_pieces(&mut h, &mut rng, req_dir, reqs.as_bytes());
            feed_pieces(&mut h, &mut rng, resp_dir, resps.as_bytes());
        } else {
            for e in &exchanges {
                feed_pieces(&mut h, &mut rng, req_dir, e.0.as_bytes());
                feed_pieces(&mut h, &mut rng, resp_dir, e.1.as_bytes());
            }
        }
        let got = h.take();
        let ctx = format!("seed {seed}");
        assert_eq!(got.len(), n, "{ctx}: {got:#?}");
        for (e, want) in got.iter().zip(&exchanges) {
            assert_eq!(e.request.method, want.2, "{ctx}");
            assert_eq!(e.request.target, want.3, "{ctx}");
            assert_eq!(status(e), want.4, "{ctx}");
            assert_eq!(e.outcome, Outcome::Complete, "{ctx}");
            assert!(
                e.request_start <= e.request_end && e.response_end >= e.request_start,
                "{ctx}"
            );
        }
        assert_eq!(
            (h.c.pending(), h.c.counters()),
            (0, Default::default()),
            "{ctx}"
        );
    }
}
