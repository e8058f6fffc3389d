//! Feeds arbitrary bytes to the BTF reader as a raw BTF blob, then makes
//! every lookup the agent makes at start, checking that nothing panics or
//! allocates without bound, whatever the bytes.
//!
//! `seeds/btf` holds small valid blobs (from the tests' BTF writer) and the
//! first 4 KiB of a kernel's /sys/kernel/btf/vmlinux; from `agent/fuzz`:
//! `mkdir -p corpus/btf && WIRESPAN_EBPF_OBJ=none cargo +nightly fuzz run
//! btf corpus/btf seeds/btf -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use wirespan::btf::KernelBtf;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = KernelBtf::from_bytes(data) else {
        return;
    };
    let _ = btf.sock_offsets();
    let _ = btf.fdtable_offsets();
    let _ = format!("{btf:?}");
    // Short names, for the fuzzer to find in its own string sections; the
    // seeds' fixtures use these.
    let outer = btf.offset_of("a", &["b"]);
    let inner = btf.offset_of("a", &["b", "c"]);
    if let (Ok(outer), Ok(inner)) = (outer, inner) {
        // c lies inside b: offsets within a member are not negative.
        assert!(inner >= outer, "a.b.c at {inner} before a.b at {outer}");
    }
    let _ = btf.offset_of("target", &["inner", "b"]);
    let _ = btf.offset_of("sock", &["__sk_common", "skc_family"]);
});
