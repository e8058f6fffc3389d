use super::writer::*;
use super::*;
use std::collections::HashMap;

/// A miniature `struct sock_common` / `struct sock`, shaped like the
/// kernel's but with `__sk_common` at a non-zero offset.
fn fixture() -> KernelBtf {
    let mut b = Builder::new();
    let u8_ = b.int("u8", 1);
    let u16_ = b.int("u16", 2);
    let u32_ = b.int("u32", 4);
    let u64_ = b.int("u64", 8);
    let addrs = b.composite(
        KIND_STRUCT,
        "",
        8,
        &[("skc_daddr", u32_, 0, 0), ("skc_rcv_saddr", u32_, 32, 0)],
    );
    let addrpair = b.composite(
        KIND_UNION,
        "",
        8,
        &[("skc_addrpair", u64_, 0, 0), ("", addrs, 0, 0)],
    );
    let ports = b.composite(
        KIND_STRUCT,
        "",
        4,
        &[("skc_dport", u16_, 0, 0), ("skc_num", u16_, 16, 0)],
    );
    let portpair = b.composite(
        KIND_UNION,
        "",
        4,
        &[("skc_portpair", u32_, 0, 0), ("", ports, 0, 0)],
    );
    // An anonymous struct nested two levels deep, behind a typedef.
    let deep = b.composite(KIND_STRUCT, "", 4, &[("skc_deep", u32_, 0, 0)]);
    let deep_union = b.composite(KIND_UNION, "", 4, &[("", deep, 0, 0)]);
    let deep_td = b.typedef("deep_t", deep_union);
    let proto = b.composite(KIND_STRUCT, "proto", 4, &[("p", u32_, 0, 0)]);
    let proto_ptr = b.ptr(proto);
    let common = b.composite(
        KIND_STRUCT,
        "sock_common",
        32,
        &[
            ("", addrpair, 0, 0),
            ("", portpair, 64, 0),
            ("skc_family", u16_, 96, 0),
            ("skc_reuse", u8_, 112, 4),
            ("skc_reuseport", u8_, 116, 1),
            ("", deep_td, 128, 0),
            ("skc_prot", proto_ptr, 192, 0),
        ],
    );
    let common_td = b.typedef("sock_common_t", common);
    let common_const = b.konst(common_td);
    b.composite(
        KIND_STRUCT,
        "sock",
        48,
        &[
            ("sk_pad", u64_, 0, 0),
            ("__sk_common", common_const, 128, 0),
        ],
    );
    KernelBtf::from_bytes(&b.build()).expect("fixture BTF parses")
}

#[test]
fn finds_members_inside_anonymous_unions_and_structs() {
    let btf = fixture();
    let off = |m: &str| btf.offset_of("sock_common", &[m]).expect(m);
    assert_eq!(off("skc_addrpair"), 0);
    assert_eq!(off("skc_daddr"), 0);
    assert_eq!(off("skc_rcv_saddr"), 4);
    assert_eq!(off("skc_portpair"), 8);
    assert_eq!(off("skc_dport"), 8);
    assert_eq!(off("skc_num"), 10);
    assert_eq!(off("skc_family"), 12);
    assert_eq!(off("skc_deep"), 16);
    assert_eq!(off("skc_prot"), 24);
}

#[test]
fn descends_through_named_members_typedefs_and_qualifiers() {
    let btf = fixture();
    assert_eq!(btf.offset_of("sock", &["__sk_common"]).unwrap(), 16);
    assert_eq!(
        btf.offset_of("sock", &["__sk_common", "skc_num"]).unwrap(),
        16 + 10
    );
    assert_eq!(
        btf.offset_of("sock", &["__sk_common", "skc_rcv_saddr"])
            .unwrap(),
        16 + 4
    );
    assert_eq!(btf.offset_of("proto", &["p"]).unwrap(), 0);
}

#[test]
fn unknown_struct_is_an_error() {
    let btf = fixture();
    let err = btf.offset_of("no_such_struct", &["x"]).unwrap_err();
    assert!(matches!(&err, BtfError::NoStruct(s) if s == "no_such_struct"));
    assert_eq!(
        err.to_string(),
        "struct no_such_struct not found in kernel BTF"
    );
    // A name that exists but is not a struct: `u32` is an int.
    assert!(matches!(
        btf.offset_of("u32", &["x"]),
        Err(BtfError::NoStruct(_))
    ));
}

#[test]
fn unknown_member_is_an_error() {
    let btf = fixture();
    let err = btf.offset_of("sock_common", &["skc_bogus"]).unwrap_err();
    assert!(matches!(
        &err,
        BtfError::NoMember { strukt, member } if strukt == "sock_common" && member == "skc_bogus"
    ));
    assert_eq!(
        err.to_string(),
        "member skc_bogus not found in struct sock_common"
    );
    // Reported against the nested struct's own name.
    let err = btf.offset_of("sock", &["__sk_common", "nope"]).unwrap_err();
    assert!(matches!(
        &err,
        BtfError::NoMember { strukt, member } if strukt == "sock_common" && member == "nope"
    ));
    // Anonymous members cannot be named by the empty string.
    assert!(matches!(
        btf.offset_of("sock_common", &[""]),
        Err(BtfError::NoMember { .. })
    ));
    // Members of a nested struct are not members of the outer one.
    assert!(matches!(
        btf.offset_of("sock", &["skc_num"]),
        Err(BtfError::NoMember { .. })
    ));
}

#[test]
fn bitfields_are_refused() {
    let btf = fixture();
    for m in ["skc_reuse", "skc_reuseport"] {
        assert!(matches!(
            btf.offset_of("sock_common", &[m]),
            Err(BtfError::Bitfield { .. })
        ));
    }
}

#[test]
fn other_errors() {
    let btf = fixture();
    assert!(matches!(
        btf.offset_of("sock_common", &["skc_prot", "p"]),
        Err(BtfError::NotComposite { .. })
    ));
    assert!(matches!(
        btf.offset_of("sock_common", &["skc_family", "x"]),
        Err(BtfError::NotComposite { .. })
    ));
    assert!(matches!(
        btf.offset_of("sock_common", &[]),
        Err(BtfError::EmptyPath(_))
    ));
    // The fixture has no skc_v6_daddr.
    assert!(matches!(
        btf.sock_offsets(),
        Err(BtfError::NoMember { member, .. }) if member == "skc_v6_daddr"
    ));
    assert!(matches!(
        KernelBtf::from_path(Path::new("/nonexistent/btf")),
        Err(BtfError::Read { .. })
    ));
    assert!(matches!(
        KernelBtf::from_bytes(b"not btf at all, definitely not"),
        Err(BtfError::Parse { .. })
    ));
}

// ---- The running kernel. ----

/// Outside CI a missing prerequisite skips with a message; in CI
/// (`CI=true`, where `cargo xtask setup` installs bpftool) it fails.
fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and: {reason}"
    );
    eprintln!("SKIPPED: {reason}");
}

fn kernel() -> Option<KernelBtf> {
    if !Path::new(VMLINUX_BTF).exists() {
        skip(&format!(
            "{VMLINUX_BTF} is absent (kernel without CONFIG_DEBUG_INFO_BTF)"
        ));
        return None;
    }
    let start = std::time::Instant::now();
    let btf = KernelBtf::from_sys().expect("kernel BTF parses");
    eprintln!("parsed {VMLINUX_BTF} in {:?}", start.elapsed());
    Some(btf)
}

#[test]
fn kernel_sock_offsets_are_plausible() {
    let Some(btf) = kernel() else { return };
    let s = btf.sock_offsets().expect("sock offsets");
    eprintln!("{s:?}");
    // The layout of struct sock_common: the address pair, then the port
    // pair, then the family; the IPv6 addresses come later.
    assert_eq!(s.skc_rcv_saddr, s.skc_daddr + 4);
    assert_eq!(s.skc_num, s.skc_dport + 2, "skc_dport/skc_num are a pair");
    assert!(s.skc_daddr < s.skc_dport);
    assert!(s.skc_dport < s.skc_family);
    assert!(s.skc_family < s.skc_v6_daddr);
    assert_eq!(s.skc_v6_rcv_saddr, s.skc_v6_daddr + 16);
    assert_ne!(s.skc_cookie, u32::MAX, "skc_cookie found");
    // struct tcp_sock begins with struct inet_connection_sock, which
    // begins with struct sock: its own fields come after those.
    let sock = btf.find_struct("sock").unwrap().size();
    assert!(s.tcp_copied_seq >= sock, "copied_seq {}", s.tcp_copied_seq);
    assert!(s.tcp_write_seq >= sock, "write_seq {}", s.tcp_write_seq);
    assert_ne!(s.tcp_copied_seq, s.tcp_write_seq);
    // __sk_common is at the start of struct sock, so the offsets from
    // struct sock equal those within struct sock_common.
    assert_eq!(btf.offset_of("sock", &["__sk_common"]).unwrap(), 0);
    assert_eq!(
        btf.offset_of("sock_common", &["skc_dport"]).unwrap(),
        s.skc_dport
    );
    let size = btf.find_struct("sock_common").unwrap().size();
    assert!(s.skc_v6_rcv_saddr + 16 <= size);
}

#[test]
fn kernel_fdtable_offsets_are_plausible() {
    let Some(btf) = kernel() else { return };
    let f = btf.fdtable_offsets().expect("fdtable offsets");
    eprintln!("{f:?}");
    let size = |s: &str| btf.find_struct(s).unwrap().size();
    assert!(f.task_files + 8 <= size("task_struct"));
    assert!(f.files_fdt + 8 <= size("files_struct"));
    assert!(f.fdtable_max_fds + 4 <= size("fdtable"));
    assert!(f.fdtable_fd + 8 <= size("fdtable"));
    assert!(f.file_private_data + 8 <= size("file"));
    assert!(f.file_f_inode + 8 <= size("file"));
    assert!(f.inode_i_mode + 2 <= size("inode"));
    assert!(f.socket_sk + 8 <= size("socket"));
    // Pointers are 8-byte aligned on 64-bit kernels.
    for off in [
        f.task_files,
        f.files_fdt,
        f.fdtable_fd,
        f.file_private_data,
        f.file_f_inode,
        f.socket_sk,
    ] {
        assert_eq!(off % 8, 0);
    }
    // i_mode is the first member of struct inode.
    assert_eq!(f.inode_i_mode, 0);
}

/// One type from `bpftool btf dump ... format raw`.
#[derive(Default)]
struct RawType {
    kind: String,
    name: String,
    type_id: Option<u32>,
    /// `(name, type id, bit offset, bitfield size)`.
    members: Vec<(String, u32, u64, u32)>,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_end_matches(','))
}

fn quoted(line: &str) -> String {
    let mut parts = line.split('\'');
    parts.next();
    match parts.next() {
        Some("(anon)") | None => String::new(),
        Some(n) => n.to_string(),
    }
}

fn parse_bpftool_raw(text: &str) -> HashMap<u32, RawType> {
    let mut types = HashMap::new();
    let mut current: Option<u32> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            let (id, rest) = rest.split_once("] ").expect("raw type header");
            let id: u32 = id.parse().expect("type id");
            let kind = rest.split_whitespace().next().unwrap_or("").to_string();
            let t = RawType {
                kind,
                name: quoted(rest),
                type_id: field(rest, "type_id").map(|v| v.parse().unwrap()),
                members: Vec::new(),
            };
            types.insert(id, t);
            current = Some(id);
        } else if let Some(rest) = line.strip_prefix('\t') {
            let Some(t) = current.and_then(|id| types.get_mut(&id)) else {
                continue;
            };
            if t.kind != "STRUCT" && t.kind != "UNION" {
                continue;
            }
            t.members.push((
                quoted(rest),
                field(rest, "type_id").unwrap().parse().unwrap(),
                field(rest, "bits_offset").unwrap().parse().unwrap(),
                field(rest, "bitfield_size").map_or(0, |v| v.parse().unwrap()),
            ));
        }
    }
    types
}

/// Independent of our reader: the offset in bits of a member path, from
/// bpftool's (libbpf's) reading of the same BTF.
fn raw_offset(types: &HashMap<u32, RawType>, strukt: &str, path: &[&str]) -> Option<u64> {
    fn composite(types: &HashMap<u32, RawType>, mut id: u32) -> Option<u32> {
        loop {
            let t = types.get(&id)?;
            match t.kind.as_str() {
                "STRUCT" | "UNION" => return Some(id),
                "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => id = t.type_id?,
                _ => return None,
            }
        }
    }
    fn find(types: &HashMap<u32, RawType>, id: u32, name: &str) -> Option<(u64, u32)> {
        for (n, ty, off, bits) in &types.get(&id)?.members {
            if n == name {
                assert_eq!(*bits, 0, "{name} is a bitfield");
                return Some((*off, *ty));
            }
            if n.is_empty()
                && let Some(inner) = composite(types, *ty)
                && let Some((o, t)) = find(types, inner, name)
            {
                return Some((off + o, t));
            }
        }
        None
    }
    let mut id = *types
        .iter()
        .find(|(_, t)| t.kind == "STRUCT" && t.name == strukt)?
        .0;
    let mut total = 0;
    for (i, name) in path.iter().enumerate() {
        let (off, ty) = find(types, id, name)?;
        total += off;
        if i + 1 < path.len() {
            id = composite(types, ty)?;
        }
    }
    Some(total)
}

#[test]
fn kernel_offsets_match_bpftool() {
    let Some(btf) = kernel() else { return };
    let out = match std::process::Command::new("bpftool")
        .args(["btf", "dump", "file", VMLINUX_BTF, "format", "raw"])
        .output()
    {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            skip(&format!(
                "bpftool failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            return;
        }
        Err(e) => {
            skip(&format!(
                "bpftool not available ({e}); `cargo xtask setup` installs it"
            ));
            return;
        }
    };
    let types = parse_bpftool_raw(&String::from_utf8_lossy(&out.stdout));
    let check = |strukt: &str, path: &[&str], ours: u32| {
        let bits = raw_offset(&types, strukt, path)
            .unwrap_or_else(|| panic!("bpftool dump lacks {strukt}.{}", path.join(".")));
        assert_eq!(bits % 8, 0);
        assert_eq!(
            u64::from(ours),
            bits / 8,
            "{strukt}.{} differs from bpftool",
            path.join(".")
        );
    };

    // Destructured without `..`: a field added to either struct fails to
    // compile here until it is checked too.
    let SockOffsets {
        skc_family,
        skc_daddr,
        skc_rcv_saddr,
        skc_dport,
        skc_num,
        skc_v6_daddr,
        skc_v6_rcv_saddr,
        skc_cookie,
        tcp_copied_seq,
        tcp_write_seq,
    } = btf.sock_offsets().expect("sock offsets");
    for (name, ours) in [
        ("skc_family", skc_family),
        ("skc_daddr", skc_daddr),
        ("skc_rcv_saddr", skc_rcv_saddr),
        ("skc_dport", skc_dport),
        ("skc_num", skc_num),
        ("skc_v6_daddr", skc_v6_daddr),
        ("skc_v6_rcv_saddr", skc_v6_rcv_saddr),
        ("skc_cookie", skc_cookie),
    ] {
        check("sock", &["__sk_common", name], ours);
        check("sock_common", &[name], ours);
    }
    check("tcp_sock", &["copied_seq"], tcp_copied_seq);
    check("tcp_sock", &["write_seq"], tcp_write_seq);

    let FdTableOffsets {
        task_files,
        files_fdt,
        fdtable_max_fds,
        fdtable_fd,
        file_private_data,
        file_f_inode,
        inode_i_mode,
        socket_sk,
        socket_type,
        _pad,
    } = btf.fdtable_offsets().expect("fdtable offsets");
    check("task_struct", &["files"], task_files);
    check("files_struct", &["fdt"], files_fdt);
    check("fdtable", &["max_fds"], fdtable_max_fds);
    check("fdtable", &["fd"], fdtable_fd);
    check("file", &["private_data"], file_private_data);
    check("file", &["f_inode"], file_f_inode);
    check("inode", &["i_mode"], inode_i_mode);
    check("socket", &["sk"], socket_sk);
    check("socket", &["type"], socket_type);
    assert_eq!(_pad, 0);
}
