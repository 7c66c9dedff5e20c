//! eBPF programs of the llmslo probe: socket syscalls, process lifecycle,
//! run-queue waits and TCP connection attempts of target processes,
//! reported through one ring buffer.
//!
//! Every program returns at its first lines unless the current task belongs
//! to a target (see [`filter`]), which keeps the cost for the rest of the node
//! to a map lookup.
#![no_std]
#![no_main]

mod arrivals;
mod filter;
mod maps;
mod process;
mod sched;
mod sockets;
mod tcp;
mod tls;

/// The kernel lets only programs with a GPL-compatible license call the
/// tracing helpers that read user memory.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach this loop, so it only
    // exists to satisfy the compiler.
    loop {}
}
