//! The same conversation split at every byte boundary must give the same
//! exchange, with timestamps from the right feeds.

use super::*;

const POST: &[u8] = b"POST /api/items?id=7 HTTP/1.1\r\nHost: example.com\r\n\
content-length: 11\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\nhello world";
const POST_RESP: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: b\r\n\r\nabcde";

const CHUNKED_REQ: &[u8] =
    b"PUT /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n\
4;name=value\r\nWiki\r\n5 \r\npedia\r\n0\r\n\r\n";
const CHUNKED_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 99\r\n\r\n\
7\r\nMozilla\r\n11;ext=\"q\";e2\r\nDeveloper Network\r\na\r\n0123456789\r\n0\r\nExpires: never\r\nX-T: 1\r\n\r\n";

fn post_expected() -> (RequestHead, ResponseHead) {
    let mut rq = req_head("POST", "/api/items?id=7");
    rq.content_length = Some(11);
    rq.traceparent = vec!["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()];
    (rq, resp_head(201, Some(5)))
}

fn chunked_expected() -> (RequestHead, ResponseHead) {
    let mut rq = req_head("PUT", "/up");
    rq.chunked = true;
    let mut rs = resp_head(200, Some(99));
    rs.chunked = true;
    (rq, rs)
}

/// Feeds `req` cut at `rcuts` then `resp` cut at `scuts` (empty pieces
/// skipped), then a follow-up exchange to prove the parser is back in sync.
/// Checks the single exchange and its timestamps.
fn run(
    req: &[u8],
    rcuts: &[usize],
    resp: &[u8],
    scuts: &[usize],
    want: &(RequestHead, ResponseHead),
) {
    let mut h = H::new();
    let feed_pieces = |h: &mut H, dir, data: &[u8], cuts: &[usize]| {
        let mut stamps = Vec::new();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&data.len())) {
            if c > prev {
                stamps.push(h.feed(dir, &data[prev..c]));
            }
            prev = c;
        }
        stamps
    };
    let rs = feed_pieces(&mut h, IN, req, rcuts);
    assert!(h.out.is_empty());
    let ss = feed_pieces(&mut h, OUT, resp, scuts);
    let e = h.one();
    let ctx = format!("req cuts {rcuts:?}, resp cuts {scuts:?}");
    assert_eq!(e.request, want.0, "{ctx}");
    assert_eq!(e.response.as_ref(), Some(&want.1), "{ctx}");
    assert_eq!(e.outcome, Outcome::Complete, "{ctx}");
    assert_eq!(e.request_start, rs[0].0, "{ctx}");
    assert_eq!(e.request_end, rs.last().unwrap().1, "{ctx}");
    assert_eq!(e.response_start, Some(ss[0].0), "{ctx}");
    assert_eq!(e.response_end, ss.last().unwrap().1, "{ctx}");
    assert_eq!(h.c.counters(), Default::default(), "{ctx}");
    h.feed(IN, &get("/next"));
    h.feed(OUT, &ok(204, ""));
    assert_eq!(h.one().request.target, "/next", "{ctx}");
}

#[test]
fn content_length_every_split_point() {
    let want = post_expected();
    for i in 0..=POST.len() {
        for j in 0..=POST_RESP.len() {
            run(POST, &[i], POST_RESP, &[j], &want);
        }
    }
}

#[test]
fn chunked_every_split_point() {
    let want = chunked_expected();
    for i in 0..=CHUNKED_REQ.len() {
        run(CHUNKED_REQ, &[i], CHUNKED_RESP, &[], &want);
    }
    for j in 0..=CHUNKED_RESP.len() {
        run(CHUNKED_REQ, &[], CHUNKED_RESP, &[j], &want);
    }
}

#[test]
fn chunked_response_every_pair_of_split_points() {
    let want = chunked_expected();
    for i in 0..=CHUNKED_RESP.len() {
        for j in i..=CHUNKED_RESP.len() {
            run(CHUNKED_REQ, &[], CHUNKED_RESP, &[i, j], &want);
        }
    }
}

#[test]
fn one_byte_at_a_time() {
    for (req, resp, want) in [
        (POST, POST_RESP, post_expected()),
        (CHUNKED_REQ, CHUNKED_RESP, chunked_expected()),
    ] {
        let rc: Vec<usize> = (1..req.len()).collect();
        let sc: Vec<usize> = (1..resp.len()).collect();
        run(req, &rc, resp, &sc, &want);
    }
}

#[test]
fn whole_conversation_in_one_feed_per_direction_interleaved_byte_by_byte() {
    // Request and response bytes alternate feeds, one byte each, once the
    // request head is out (a server that answers while the body streams).
    let mut h = H::new();
    let head_len = POST.len() - 11;
    h.feed(IN, &POST[..head_len]);
    for k in 0..POST_RESP.len().max(11) {
        if let Some(b) = POST.get(head_len + k) {
            h.feed(IN, std::slice::from_ref(b));
        }
        if let Some(b) = POST_RESP.get(k) {
            h.feed(OUT, std::slice::from_ref(b));
        }
    }
    let e = h.one();
    assert_eq!((e.request, e.response.unwrap()), post_expected());
}
