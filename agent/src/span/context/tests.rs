//! One test per W3C Trace Context Level 1 rule.

use super::*;

const OK: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn tp(v: &str) -> Result<SpanContext, Invalid> {
    parse_traceparent(&[v.to_string()])
}

#[test]
fn valid_version_00() {
    let c = tp(OK).unwrap();
    assert_eq!(format_traceparent(&c), OK);
    assert_eq!(c.flags, 1);
    assert_eq!(
        tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
            .unwrap()
            .flags,
        0
    );
}

#[test]
fn missing_and_duplicated() {
    assert_eq!(parse_traceparent(&[]), Err(Invalid::Missing));
    assert_eq!(
        parse_traceparent(&[OK.into(), OK.into()]),
        Err(Invalid::Duplicated)
    );
}

#[test]
fn upper_case_hex_is_invalid() {
    assert_eq!(
        tp("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Err(Invalid::Format)
    );
    assert_eq!(
        tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01"),
        Err(Invalid::Format)
    );
    assert_eq!(
        tp("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Err(Invalid::Version)
    );
}

#[test]
fn zero_ids_are_invalid() {
    assert_eq!(
        tp("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Err(Invalid::ZeroTraceId)
    );
    assert_eq!(
        tp("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        Err(Invalid::ZeroParentId)
    );
}

#[test]
fn version_rules() {
    assert_eq!(
        tp("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Err(Invalid::Version)
    );
    // Version 00 must be exactly 55 characters.
    assert_eq!(tp(&format!("{OK}-extra")), Err(Invalid::Length));
    // A future version may carry more after a dash...
    assert!(
        tp("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds").is_ok()
    );
    assert!(tp("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_ok());
    // ...but not glued on.
    assert_eq!(
        tp("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
        Err(Invalid::Format)
    );
}

#[test]
fn shape_errors() {
    assert_eq!(
        tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
        Err(Invalid::Length)
    );
    assert_eq!(
        tp("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Err(Invalid::Format)
    );
    assert_eq!(
        tp("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"),
        Err(Invalid::Format)
    );
    assert_eq!(
        tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z"),
        Err(Invalid::Format)
    );
    assert_eq!(
        tp("\u{e9}0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"),
        Err(Invalid::Version)
    );
}

#[test]
fn only_sampled_flag_is_kept() {
    assert_eq!(
        tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff")
            .unwrap()
            .flags,
        1
    );
}

#[test]
fn tracestate_rules() {
    let ts = |v: &[&str]| parse_tracestate(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        ts(&["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"]),
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );
    // Several headers combine in order; blanks and empty members are dropped.
    assert_eq!(ts(&["a=1", " b=2 ,, "]), "a=1,b=2");
    assert_eq!(ts(&["tenant@system=v"]), "tenant@system=v");
    // Invalid lists are dropped whole.
    assert_eq!(ts(&["Upper=1"]), "");
    assert_eq!(ts(&["a=1,a=2"]), "");
    assert_eq!(ts(&["novalue"]), "");
    assert_eq!(ts(&["a=x,b=y=z"]), "");
    // At most 32 members are kept.
    let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
    let joined = many.join(",");
    assert_eq!(ts(&[joined.as_str()]).split(',').count(), 32);
}

#[test]
fn inbound_needs_a_valid_traceparent() {
    assert!(parse_inbound(&[], &["a=1".into()]).is_err());
    let i = parse_inbound(&[OK.into()], &["a=1".into()]).unwrap();
    assert_eq!(i.tracestate, "a=1");
}
