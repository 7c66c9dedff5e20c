//! Go `crypto/tls`: the functions to probe, the Go version, and the RET
//! instructions of `(*Conn).Read`.
//!
//! Go binaries get uprobes at the entry of `Write` and `Read` and at every
//! RET of `Read` instead of a uretprobe. A uretprobe overwrites the return
//! address on the stack, but Go copies stacks when they grow and unwinds
//! them for tracebacks and the garbage collector. Both then find a foreign
//! address, and the program crashes.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Architecture, Object as _, ObjectSegment as _, ReadRef};

use super::elf::{AttachPlan, GoTlsOffsets, Symbols, TlsFinding, TlsLibrary, file_offset};

pub const CONN_WRITE: &str = "crypto/tls.(*Conn).Write";
pub const CONN_READ: &str = "crypto/tls.(*Conn).Read";
/// A Go string header `{ptr, len}` holding the toolchain version.
pub const BUILD_VERSION: &str = "runtime.buildVersion";

/// First Go release that passes arguments in registers on amd64; the eBPF
/// programs read them from RAX, RBX and RCX.
const MIN_REGISTER_ABI: (u32, u32) = (1, 17);

/// Maximum function size disassembled. `(*Conn).Read` is a few hundred
/// bytes, so a larger size means the symbol table is wrong.
const MAX_FUNCTION_BYTES: u64 = 64 * 1024;

/// Returns the Go TLS finding of a file with `crypto/tls` symbols, or
/// `None` when the file has none.
pub fn inspect<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    symbols: &Symbols,
) -> Option<TlsFinding> {
    let write = symbols.function(CONN_WRITE);
    let read = symbols.function(CONN_READ);
    if write.is_none() && read.is_none() {
        return None;
    }
    let invisible = |reason: String| {
        Some(TlsFinding {
            library: TlsLibrary::GoCryptoTls,
            plan: None,
            reason: Some(reason),
        })
    };

    let (Some((write_address, _)), Some((read_address, read_size))) = (write, read) else {
        return invisible(format!(
            "the binary lacks {} (removed by the linker as unused), so its TLS traffic is \
             incomplete",
            if write.is_none() {
                CONN_WRITE
            } else {
                CONN_READ
            }
        ));
    };
    if elf.architecture() != Architecture::X86_64 {
        return invisible(format!(
            "the probe reads Go TLS plaintext only in amd64 binaries; this one is {:?}",
            elf.architecture()
        ));
    }
    let Some(go_version) = go_version(elf, symbols) else {
        return invisible(format!(
            "the Go version could not be read from {BUILD_VERSION}, so the calling convention \
             is unknown"
        ));
    };
    match parse_go_version(&go_version) {
        Some(version) if version >= MIN_REGISTER_ABI => {}
        _ => {
            return invisible(format!(
                "{go_version} passes arguments on the stack; the probe supports Go 1.17 and later"
            ));
        }
    }

    let read_returns = match function_bytes(elf, read_address, read_size) {
        Some(code) => ret_addresses(code, read_address)
            .into_iter()
            .filter_map(|address| file_offset(elf, address))
            .collect::<Vec<_>>(),
        None => Vec::new(),
    };
    let (Some(write), Some(read)) = (
        file_offset(elf, write_address),
        file_offset(elf, read_address),
    ) else {
        return invisible("crypto/tls functions lie outside every loadable segment".into());
    };
    if read_returns.is_empty() {
        return invisible(format!("no RET instruction found in {CONN_READ}"));
    }
    Some(TlsFinding {
        library: TlsLibrary::GoCryptoTls,
        plan: Some(AttachPlan::GoTls(GoTlsOffsets {
            go_version,
            write,
            read,
            read_returns,
        })),
        reason: None,
    })
}

/// Reads the string that `runtime.buildVersion` points to.
fn go_version<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    symbols: &Symbols,
) -> Option<String> {
    let header = read_virtual(elf, symbols.address(BUILD_VERSION)?, 16)?;
    let pointer = u64::from_le_bytes(header[..8].try_into().ok()?);
    let length = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if length == 0 || length > 64 {
        return None;
    }
    let bytes = read_virtual(elf, pointer, length)?;
    String::from_utf8(bytes.to_vec()).ok()
}

/// Parses `go1.19.8` or `go1.21rc2` into (major, minor).
fn parse_go_version(version: &str) -> Option<(u32, u32)> {
    let rest = version.strip_prefix("go")?;
    let mut parts = rest.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_text = parts.next()?;
    let digits: String = minor_text
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, digits.parse().ok()?))
}

fn function_bytes<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    address: u64,
    size: u64,
) -> Option<&'data [u8]> {
    if size == 0 || size > MAX_FUNCTION_BYTES {
        return None;
    }
    read_virtual(elf, address, size)
}

fn read_virtual<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    address: u64,
    size: u64,
) -> Option<&'data [u8]> {
    elf.segments()
        .find_map(|segment| segment.data_range(address, size).ok().flatten())
}

/// Returns the address of every RET in `code`, which starts at `address`.
/// Decoding goes front to back, which is exact for Go code: the Go linker
/// puts no data inside function bodies.
pub fn ret_addresses(code: &[u8], address: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut returns = Vec::new();
    for instruction in &mut decoder {
        if instruction.mnemonic() == Mnemonic::Ret {
            returns.push(instruction.ip());
        }
    }
    returns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_go_version("go1.19.8"), Some((1, 19)));
        assert_eq!(parse_go_version("go1.21rc2"), Some((1, 21)));
        assert_eq!(parse_go_version("go1.17"), Some((1, 17)));
        assert_eq!(parse_go_version("devel +abc"), None);
    }

    #[test]
    fn ret_found_after_other_instructions() {
        // mov rax, rbx; ret; int3; ret 8
        let code = [0x48, 0x89, 0xd8, 0xc3, 0xcc, 0xc2, 0x08, 0x00];
        assert_eq!(ret_addresses(&code, 0x1000), vec![0x1003, 0x1005]);
    }

    #[test]
    fn c3_inside_an_immediate_is_no_ret() {
        // mov eax, 0xc3c3c3c3; ret
        let code = [0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3];
        assert_eq!(ret_addresses(&code, 0x2000), vec![0x2005]);
    }
}
