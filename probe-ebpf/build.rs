//! Rebuilds the eBPF object when `bpf-linker` changes, because cargo cannot
//! see that tool as a dependency.

fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo::rerun-if-changed={}", path.display()),
        Err(error) => {
            println!("cargo::warning=bpf-linker not found on PATH ({error}); run scripts/setup.sh")
        }
    }
}
