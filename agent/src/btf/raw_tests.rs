//! The BTF reader on malformed input, and on every kind of type.

use super::raw::{FormatError, Kind, RawBtf};
use super::writer::*;
use super::*;

fn parse_error(bytes: &[u8]) -> FormatError {
    match KernelBtf::from_bytes(bytes) {
        Err(BtfError::Parse { source, .. }) => source,
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn malformed_detail(r: Result<u32, BtfError>) -> String {
    match r {
        Err(BtfError::Malformed { detail, .. }) => detail,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

/// One type of every kind, each with its trailing data written out as
/// btf.h lays it out, then the struct looked up: if the reader skipped any
/// kind's trailing data by the wrong length, it would fall out of step and
/// not find it. `target.inner.b` is at byte 12.
fn every_kind() -> Vec<u8> {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    b.ptr(int);
    b.any("", info(KIND_ARRAY, 0), 0, &[int, int, 4]);
    let (one, two, three) = (b.s("ONE"), b.s("TWO"), b.s("THREE"));
    b.any("e", info(KIND_ENUM, 3), 4, &[one, 1, two, 2, three, 3]);
    // A forward declaration and a typedef named like the struct, before
    // it: neither is taken for it.
    b.any("target", info(KIND_FWD, 0), 0, &[]);
    b.typedef("target", int);
    b.any("", info(KIND_VOLATILE, 0), int, &[]);
    b.konst(int);
    b.any("", info(KIND_RESTRICT, 0), int, &[]);
    let (x, y) = (b.s("x"), b.s("y"));
    let proto = b.any("", info(KIND_FUNC_PROTO, 2), int, &[x, int, y, int]);
    // FUNC's vlen is its linkage (1, global): nothing follows it.
    b.any("f", info(KIND_FUNC, 1), proto, &[]);
    let var = b.any("v", info(KIND_VAR, 0), int, &[1]);
    b.any(".data", info(KIND_DATASEC, 2), 8, &[var, 0, 4, var, 4, 4]);
    b.any("double", info(KIND_FLOAT, 0), 8, &[]);
    b.any("tag", info(KIND_DECL_TAG, 0), var, &[u32::MAX]);
    b.any("user", info(KIND_TYPE_TAG, 0), int, &[]);
    let (big, huge) = (b.s("BIG"), b.s("HUGE"));
    b.any("e64", info(KIND_ENUM64, 2), 8, &[big, 1, 2, huge, 3, 4]);

    let inner = b.composite(
        KIND_STRUCT,
        "inner",
        8,
        &[("a", int, 0, 0), ("b", int, 32, 0)],
    );
    // inner behind every link a member's type chain may have.
    let td = b.typedef("inner_t", inner);
    let c = b.konst(td);
    let r = b.any("", info(KIND_RESTRICT, 0), c, &[]);
    let v = b.any("", info(KIND_VOLATILE, 0), r, &[]);
    let tagged = b.any("rcu", info(KIND_TYPE_TAG, 0), v, &[]);
    let int_ptr = b.ptr(int);
    let anon = b.composite(KIND_UNION, "", 8, &[("p", int_ptr, 0, 0)]);
    b.composite(
        KIND_STRUCT,
        "target",
        24,
        &[
            ("pad", int, 0, 0),
            ("inner", tagged, 64, 0),
            ("", anon, 128, 0),
        ],
    );
    // A second definition of the name: the first wins.
    b.composite(KIND_STRUCT, "target", 8, &[("inner", inner, 0, 0)]);
    b.build()
}

#[test]
fn every_kind_is_stepped_over() {
    let bytes = every_kind();
    let raw = RawBtf::parse(bytes.clone()).expect("parses");
    use Kind::*;
    let kinds: Vec<Kind> = raw.types().map(|t| t.expect("type").kind).collect();
    assert_eq!(
        kinds,
        [
            Int, Ptr, Array, Enum, Fwd, Typedef, Volatile, Const, Restrict, FuncProto, Func, Var,
            Datasec, Float, DeclTag, TypeTag, Enum64, Struct, Typedef, Const, Restrict, Volatile,
            TypeTag, Ptr, Union, Struct, Struct,
        ]
    );
    assert_eq!(raw.type_count() as usize, kinds.len());

    let btf = KernelBtf::from_bytes(&bytes).expect("parses");
    assert_eq!(btf.offset_of("target", &["inner"]).unwrap(), 8);
    assert_eq!(btf.offset_of("target", &["inner", "b"]).unwrap(), 12);
    assert_eq!(btf.offset_of("target", &["p"]).unwrap(), 16);
    assert_eq!(btf.find_struct("target").unwrap().size(), 24);
}

#[test]
fn header_errors() {
    let good = every_kind();
    assert_eq!(parse_error(&[]), FormatError::HeaderTruncated { len: 0 });
    assert_eq!(
        parse_error(&good[..1]),
        FormatError::HeaderTruncated { len: 1 }
    );
    assert_eq!(
        parse_error(&good[..23]),
        FormatError::HeaderTruncated { len: 23 }
    );
    assert_eq!(
        KernelBtf::from_bytes(&good[..10]).unwrap_err().to_string(),
        "cannot parse BTF from <memory>: header truncated: 10 bytes, a BTF header has 24"
    );

    let err = parse_error(b"not btf at all, definitely not");
    assert_eq!(err, FormatError::BadMagic(0x6f6e));
    assert_eq!(err.to_string(), "bad magic 0x6f6e, expected 0xeb9f");

    let mut swapped = good.clone();
    swapped.swap(0, 1);
    let err = parse_error(&swapped);
    assert_eq!(err, FormatError::BigEndian);
    assert!(err.to_string().contains("big-endian"), "{err}");

    let mut v2 = good.clone();
    v2[2] = 2;
    assert_eq!(parse_error(&v2), FormatError::UnsupportedVersion(2));

    for hdr_len in [0, 23, good.len() as u32 + 1, u32::MAX] {
        let mut bad = good.clone();
        patch(&mut bad, HDR_LEN_AT, hdr_len);
        assert!(
            matches!(parse_error(&bad), FormatError::BadHeaderLen { .. }),
            "{hdr_len}"
        );
    }

    // A longer header (fields a later kernel may add) is skipped.
    let mut longer = good[..24].to_vec();
    patch(&mut longer, HDR_LEN_AT, 32);
    longer.extend_from_slice(&[0; 8]);
    longer.extend_from_slice(&good[24..]);
    let btf = KernelBtf::from_bytes(&longer).expect("longer header parses");
    assert_eq!(btf.offset_of("target", &["inner", "b"]).unwrap(), 12);
}

#[test]
fn sections_past_the_end_are_errors() {
    let good = every_kind();
    let read = |at| u32::from_le_bytes(good[at..at + 4].try_into().unwrap());
    let (type_len, str_off, str_len) = (read(TYPE_LEN_AT), read(STR_OFF_AT), read(STR_LEN_AT));
    for (at, value, section) in [
        (TYPE_LEN_AT, type_len + str_len + 1, "type"),
        (TYPE_LEN_AT, u32::MAX, "type"),
        (TYPE_OFF_AT, str_off + str_len, "type"),
        (TYPE_OFF_AT, u32::MAX, "type"),
        (STR_LEN_AT, str_len + 1, "string"),
        (STR_OFF_AT, u32::MAX, "string"),
        (STR_LEN_AT, u32::MAX, "string"),
    ] {
        let mut bad = good.clone();
        patch(&mut bad, at, value);
        let err = parse_error(&bad);
        assert!(
            matches!(err, FormatError::SectionOutOfBounds { section: s, .. } if s == section),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{section} section out of bounds")),
            "{err}"
        );
    }
    // The file cut short: the string section runs past the end.
    let err = parse_error(&good[..good.len() - 1]);
    assert!(matches!(
        err,
        FormatError::SectionOutOfBounds {
            section: "string",
            ..
        }
    ));
}

#[test]
fn truncated_types_and_unknown_kinds_are_errors() {
    let good = every_kind();
    let raw = RawBtf::parse(good.clone()).unwrap();
    let last = raw.type_count();
    // The type section ends inside the last type (its last member).
    let mut bad = good.clone();
    let type_len = u32::from_le_bytes(good[TYPE_LEN_AT..][..4].try_into().unwrap());
    patch(&mut bad, TYPE_LEN_AT, type_len - 4);
    assert_eq!(parse_error(&bad), FormatError::TypeTruncated { id: last });
    // ... or inside its 12-byte common header.
    let mut b = Builder::new();
    b.int("int", 4);
    b.s("strings for the type section to overlap");
    let mut bytes = b.build();
    patch(&mut bytes, TYPE_LEN_AT, 16 + 8);
    assert_eq!(parse_error(&bytes), FormatError::TypeTruncated { id: 2 });
    // A struct claiming more members than there are bytes.
    let mut b = Builder::new();
    let int = b.int("int", 4);
    b.any("s", info(KIND_STRUCT, 2), 4, &[0, int, 0]);
    assert_eq!(
        parse_error(&b.build()),
        FormatError::TypeTruncated { id: 2 }
    );

    for kind in [0, 20, 31] {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.any("what", info(kind, 0), int, &[]);
        b.composite(KIND_STRUCT, "s", 4, &[("a", int, 0, 0)]);
        let err = parse_error(&b.build());
        assert_eq!(err, FormatError::UnknownKind { kind, id: 2 });
        assert_eq!(
            err.to_string(),
            format!("unknown BTF kind {kind} at type id 2")
        );
    }
}

#[test]
fn dangling_type_ids_are_malformed() {
    let raw = RawBtf::parse(every_kind()).unwrap();
    let count = raw.type_count();
    assert!(raw.type_by_id(0).unwrap().is_none(), "id 0 is void");
    assert!(raw.type_by_id(count).unwrap().is_some());
    for id in [count + 1, 1234, u32::MAX] {
        assert_eq!(
            raw.type_by_id(id).unwrap_err(),
            FormatError::DanglingTypeId { id, count }
        );
    }

    let mut b = Builder::new();
    let int = b.int("int", 4);
    b.composite(
        KIND_STRUCT,
        "s",
        12,
        &[("m", 1234, 0, 0), ("", 1234, 32, 0), ("after", int, 64, 0)],
    );
    let btf = KernelBtf::from_bytes(&b.build()).unwrap();
    // A named member's type is followed only to descend into it.
    assert_eq!(btf.offset_of("s", &["m"]).unwrap(), 0);
    let err = btf.offset_of("s", &["m", "x"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed BTF while resolving s.m: dangling type id 1234 (the BTF has 2 types)"
    );
    // An anonymous member's type is followed to search it.
    let detail = malformed_detail(btf.offset_of("s", &["after"]));
    assert!(detail.starts_with("dangling type id 1234"), "{detail}");
}

#[test]
fn bad_string_offsets_are_malformed() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let a = b.s("a");
    // A member's name past the string section.
    b.put(&[a, info(KIND_STRUCT, 2), 8, 9999, int, 0, a, int, 32]);
    let bytes = b.build();
    let btf = KernelBtf::from_bytes(&bytes).unwrap();
    let detail = malformed_detail(btf.offset_of("a", &["a"]));
    assert!(
        detail.starts_with("string offset 9999 out of bounds"),
        "{detail}"
    );

    // A struct's name past the string section, met while scanning for
    // another.
    let mut b = Builder::new();
    let int = b.int("int", 4);
    b.put(&[5000, info(KIND_STRUCT, 0), 0]);
    b.composite(KIND_STRUCT, "s", 4, &[("a", int, 0, 0)]);
    let btf = KernelBtf::from_bytes(&b.build()).unwrap();
    let detail = malformed_detail(btf.offset_of("s", &["a"]));
    assert!(
        detail.contains("string offset 5000 out of bounds"),
        "{detail}"
    );

    // A string without its NUL, at the end of the section.
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let unterminated = b.raw_string(b"inner");
    b.put(&[unterminated, info(KIND_TYPEDEF, 0), int]);
    let bytes = b.build();
    let str_len = u32::from_le_bytes(bytes[STR_LEN_AT..][..4].try_into().unwrap());
    let raw = RawBtf::parse(bytes).unwrap();
    assert_eq!(raw.name(1).unwrap(), b"int");
    assert_eq!(
        raw.name(unterminated),
        Err(FormatError::StringUnterminated { off: unterminated })
    );
    // Equal to no name, since the NUL is missing.
    assert_eq!(raw.name_is(unterminated, b"inner"), Ok(false));
    for off in [str_len, 9999, u32::MAX] {
        let err = FormatError::StringOutOfBounds {
            off,
            len: str_len as usize,
        };
        assert_eq!(raw.name(off), Err(err.clone()));
        assert_eq!(raw.name_is(off, b"x"), Err(err));
    }
}

#[test]
fn an_empty_name_is_anonymous() {
    // Anonymous members normally have name offset 0; one pointing at
    // some other empty string is anonymous too, and searched.
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let inner = b.composite(KIND_STRUCT, "", 4, &[("deep", int, 0, 0)]);
    let x = b.s("x");
    let empty = x + 1; // the NUL that ends "x"
    let name = b.s("s");
    b.put(&[name, info(KIND_STRUCT, 2), 8, x, int, 0, empty, inner, 32]);
    let btf = KernelBtf::from_bytes(&b.build()).unwrap();
    assert_eq!(btf.offset_of("s", &["deep"]).unwrap(), 4);
}

#[test]
fn type_chain_cycles_are_malformed() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    // typedef a -> typedef b -> a, and a typedef naming itself (id 4).
    b.typedef("a", 3);
    b.typedef("b", 2);
    b.typedef("self", 4);
    b.composite(
        KIND_STRUCT,
        "s",
        12,
        &[("m", 2, 0, 0), ("", 4, 32, 0), ("after", int, 64, 0)],
    );
    let btf = KernelBtf::from_bytes(&b.build()).unwrap();
    let err = btf.offset_of("s", &["m", "x"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed BTF while resolving s.m: type chain too long"
    );
    assert_eq!(
        malformed_detail(btf.offset_of("s", &["after"])),
        "type chain too long"
    );
}

#[test]
fn misaligned_members_are_bitfields() {
    // Without kind_flag a bitfield shows only as a bit offset that is not
    // a whole byte.
    let mut b = Builder::new();
    let int = b.int("int", 4);
    b.composite(KIND_STRUCT, "s", 4, &[("a", int, 0, 0), ("b", int, 3, 0)]);
    let btf = KernelBtf::from_bytes(&b.build()).unwrap();
    assert_eq!(btf.offset_of("s", &["a"]).unwrap(), 0);
    assert!(matches!(
        btf.offset_of("s", &["b"]),
        Err(BtfError::Bitfield { .. })
    ));
}

/// Every lookup the agent makes, on whatever `bytes` parse to.
fn exercise(bytes: &[u8]) {
    if let Ok(btf) = KernelBtf::from_bytes(bytes) {
        let _ = btf.sock_offsets();
        let _ = btf.fdtable_offsets();
        let _ = btf.offset_of("target", &["inner", "b"]);
        let _ = btf.offset_of("target", &["p"]);
        let _ = format!("{btf:?}");
    }
}

#[test]
fn truncated_and_corrupted_input_never_panics() {
    let good = every_kind();
    for len in 0..good.len() {
        exercise(&good[..len]);
    }
    for at in 0..good.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[at] ^= flip;
            exercise(&bad);
        }
    }
    // Garbage behind a valid header, from a fixed xorshift sequence.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..2000 {
        let mut bad = good.clone();
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = 24 + (state as usize) % (good.len() - 24);
            bad[at] = (state >> 32) as u8;
        }
        exercise(&bad);
    }
}
