//! Giving start-up's heap back to the kernel.

/// Returns the heap that start-up freed to the kernel. Loading parses the
/// kernel's BTF (/sys/kernel/btf/vmlinux, twice: aya's loader and
/// `btf::KernelBtf`), the eBPF object and the verifier logs, and scans
/// OpenSSL files; all of it is freed once the programs are attached, but
/// glibc keeps freed pages below the top of the heap resident: about
/// 25 MiB of the idle agent's RSS before this call.
pub fn release_startup_heap() {
    // SAFETY: malloc_trim only walks and trims the allocator's own arenas;
    // it is thread-safe and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
