//! TLS plaintext: finds the TLS libraries that target processes map, attaches
//! the uprobes of `probe-ebpf/src/tls.rs` to each library file once, and
//! reports which processes use a TLS library whose plaintext stays hidden.

pub mod attach;
pub mod discover;
pub mod elf;
pub mod golang;
pub mod inspector;
pub mod watch;

pub mod route;
pub mod sni;
#[cfg(test)]
mod tests;
