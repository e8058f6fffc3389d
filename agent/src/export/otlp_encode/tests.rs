use prost::Message;

use super::*;

fn span(pid: u32, name: &str) -> Span {
    let mut sp = otlp::tests::span(pid, name, Status::Unset);
    sp.attributes
        .insert(0, ("http.request.method", AttrValue::Str("GET".into())));
    sp.attributes.push(("server.port", AttrValue::Int(8080)));
    sp
}

fn assert_same_as_prost(batch: &[Span]) {
    let mut enc = RequestEncoder::default();
    let want = otlp::to_request(batch).encode_to_vec();
    assert_eq!(enc.encode(batch), want);
    // Reused scratch buffers leave nothing behind.
    assert_eq!(enc.encode(batch), want);
}

#[test]
fn bytes_equal_prosts_encoding_of_the_request() {
    let (p1, p2, p3) = (1, 2, 300_000);
    let mut odd = span(p2, "");
    odd.parent_span_id = Some([7; 8]);
    odd.trace_state = "k=v,x=y".into();
    odd.kind = SpanKind::Client;
    odd.start_unix_ns = 0;
    odd.end_unix_ns = 0;
    odd.status = Status::Error("HTTP 500".into());
    odd.attributes = vec![
        ("error.type", AttrValue::Str("500".into())),
        ("empty", AttrValue::Str("".into())),
        ("", AttrValue::Int(0)),
        ("negative", AttrValue::Int(-1)),
        ("big", AttrValue::Str("a".repeat(300).into())),
        ("v4", AttrValue::Ip([255, 255, 255, 255].into())),
        (
            "v6",
            AttrValue::Ip(
                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                    .parse()
                    .unwrap(),
            ),
        ),
        (
            "v6 mapped",
            AttrValue::Ip("::ffff:1.2.3.4".parse().unwrap()),
        ),
        (
            "v6 long",
            AttrValue::Ip("1111:2222:3333:4444:5555:6666:7777:8888".parse().unwrap()),
        ),
        ("shorter", AttrValue::Ip("::1".parse().unwrap())),
        ("shorter again", AttrValue::Ip("::1".parse().unwrap())),
        ("v4 again", AttrValue::Ip([255, 255, 255, 255].into())),
    ];
    let mut error_without_message = span(p3, "GET /{id}");
    error_without_message.status = Status::Error(String::new());
    error_without_message.attributes.clear();

    assert_same_as_prost(&[]);
    assert_same_as_prost(&[span(p1, "GET /a")]);
    assert_same_as_prost(&[
        span(p1, "GET /a"),
        odd,
        span(p1, "GET /c"),
        error_without_message,
        span(p2, "POST /b"),
    ]);
    let many: Vec<Span> = (0..600).map(|i| span(p1, &"n".repeat(i))).collect();
    assert_same_as_prost(&many);
}

#[test]
fn varints_and_keys_as_prost_writes_them() {
    let values = (0..64)
        .flat_map(|shift| [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1])
        .chain([0, u64::MAX, -1i64 as u64]);
    for v in values {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        encode_varint(v, &mut ours);
        prost::encoding::encode_varint(v, &mut theirs);
        assert_eq!(ours, theirs, "{v}");
    }
    for tag in [1, 2, 15, 16, 2047, 2048, 536_870_911] {
        for wt in [
            WireType::Varint,
            WireType::LengthDelimited,
            WireType::SixtyFourBit,
        ] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            encode_key(tag, wt, &mut ours);
            prost::encoding::encode_key(tag, wt, &mut theirs);
            assert_eq!(ours, theirs, "{tag} {wt:?}");
        }
    }
}
