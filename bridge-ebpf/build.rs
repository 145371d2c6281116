use which::which;

/// Rebuild the program when bpf-linker changes, as aya-template does: cargo cannot see it.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().expect("non-UTF-8 path")
    );
}
