//! Finds the TLS library inside one ELF file (a shared library or an
//! executable) and the file offsets the uprobes attach to.
//!
//! Symbols come from `.symtab` and `.dynsym`. Files without them are searched
//! for marker strings, so that a stripped binary that carries TLS is reported
//! as invisible instead of silently missing.

use std::{fs::File, path::Path};

use object::{
    Architecture, Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _,
    ReadCache, ReadRef, SectionKind, SymbolKind,
};

use super::golang;

/// A TLS implementation the probe can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsLibrary {
    OpenSsl,
    BoringSsl,
    GoCryptoTls,
    Rustls,
    GnuTls,
    Nss,
    JavaJsse,
}

impl TlsLibrary {
    /// Name used in `TlsVisibility.library` and `Connection.tls_library`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenSsl => "openssl",
            Self::BoringSsl => "boringssl",
            Self::GoCryptoTls => "go_crypto_tls",
            Self::Rustls => "rustls",
            Self::GnuTls => "gnutls",
            Self::Nss => "nss",
            Self::JavaJsse => "java_jsse",
        }
    }
}

/// File offsets of the OpenSSL-API functions; BoringSSL lacks the `_ex`
/// forms in older releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenSslOffsets {
    pub ssl_write: Option<u64>,
    pub ssl_read: Option<u64>,
    pub ssl_write_ex: Option<u64>,
    pub ssl_read_ex: Option<u64>,
}

/// File offsets of Go `crypto/tls.(*Conn).Write` and `Read`, and of every
/// RET instruction of `Read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTlsOffsets {
    /// `runtime.buildVersion`, such as `go1.19.8`.
    pub go_version: String,
    pub write: u64,
    pub read: u64,
    pub read_returns: Vec<u64>,
}

/// Where the probe attaches for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachPlan {
    OpenSsl(OpenSslOffsets),
    GoTls(GoTlsOffsets),
}

/// What one ELF file contains of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFinding {
    pub library: TlsLibrary,
    /// Set when the probe can read this library's plaintext.
    pub plan: Option<AttachPlan>,
    /// Why the plaintext is not visible, and what would make it visible;
    /// set exactly when `plan` is `None`.
    pub reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("failed to open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse {path} as ELF: {source}")]
    Parse {
        path: String,
        #[source]
        source: object::Error,
    },
}

/// Strings that only a TLS implementation compiled into a file contains,
/// searched in files without usable symbols. OpenSSL and BoringSSL name
/// their sources in error records (`ssl/ssl_lib.c`, `ssl/ssl_lib.cc`).
const STRIPPED_MARKERS: &[(&[u8], TlsLibrary)] = &[
    (b"crypto/tls.(*Conn).Write", TlsLibrary::GoCryptoTls),
    (b"rustls", TlsLibrary::Rustls),
    (b"ssl/ssl_lib.c", TlsLibrary::OpenSsl),
];

/// Finds the TLS library in the ELF file at `path`, if there is one.
/// `file_name` is the name the process mapped, used to recognise
/// libraries by name (GnuTLS, NSS, the JVM).
///
/// # Errors
///
/// [`ElfError`] when the file cannot be opened or is not ELF.
pub fn inspect(path: &Path, file_name: &str) -> Result<Option<TlsFinding>, ElfError> {
    if let Some(library) = unsupported_by_name(file_name) {
        return Ok(Some(unsupported(library)));
    }
    let file = File::open(path).map_err(|source| ElfError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|source| ElfError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    Ok(inspect_parsed(&elf))
}

fn inspect_parsed<'data, R: ReadRef<'data>>(elf: &object::File<'data, R>) -> Option<TlsFinding> {
    let symbols = Symbols::collect(elf);

    if symbols.has_openssl_api() {
        return Some(openssl_finding(elf, &symbols));
    }
    if let Some(finding) = golang::inspect(elf, &symbols) {
        return Some(finding);
    }
    if symbols.rustls {
        return Some(unsupported(TlsLibrary::Rustls));
    }
    if symbols.defined_count > 0 && !symbols.only_dynamic {
        // A full symbol table without TLS functions: no TLS in this file.
        return None;
    }
    stripped_finding(elf)
}

fn openssl_finding<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    symbols: &Symbols,
) -> TlsFinding {
    let library = if symbols.boringssl {
        TlsLibrary::BoringSsl
    } else {
        TlsLibrary::OpenSsl
    };
    let offset = |name: &str| {
        symbols
            .address(name)
            .and_then(|address| file_offset(elf, address))
    };
    let offsets = OpenSslOffsets {
        ssl_write: offset("SSL_write"),
        ssl_read: offset("SSL_read"),
        ssl_write_ex: offset("SSL_write_ex"),
        ssl_read_ex: offset("SSL_read_ex"),
    };
    if elf.architecture() != Architecture::X86_64 {
        return TlsFinding {
            library,
            plan: None,
            reason: Some(format!(
                "the probe reads {} plaintext only in x86_64 binaries; this one is {:?}",
                library.name(),
                elf.architecture()
            )),
        };
    }
    if offsets.ssl_write.is_none() && offsets.ssl_write_ex.is_none()
        || offsets.ssl_read.is_none() && offsets.ssl_read_ex.is_none()
    {
        return TlsFinding {
            library,
            plan: None,
            reason: Some(
                "SSL_read or SSL_write is named in the symbol table but lies outside every \
                 loadable segment"
                    .to_string(),
            ),
        };
    }
    TlsFinding {
        library,
        plan: Some(AttachPlan::OpenSsl(offsets)),
        reason: None,
    }
}

fn stripped_finding<'data, R: ReadRef<'data>>(elf: &object::File<'data, R>) -> Option<TlsFinding> {
    let library = find_marker(elf)?;
    let reason = match library {
        TlsLibrary::GoCryptoTls => {
            "Go binary built without a symbol table (-ldflags=-s); rebuild it without -s to let \
             the probe find crypto/tls"
        }
        TlsLibrary::Rustls => {
            "rustls keeps its plaintext inside Rust code that has no stable symbols to probe"
        }
        _ => {
            "TLS library linked statically into a stripped binary: SSL_read and SSL_write \
             have no symbols; use a build that keeps .symtab or exports them"
        }
    };
    Some(TlsFinding {
        library,
        plan: None,
        reason: Some(reason.to_string()),
    })
}

/// Searches read-only data sections for [`STRIPPED_MARKERS`].
fn find_marker<'data, R: ReadRef<'data>>(elf: &object::File<'data, R>) -> Option<TlsLibrary> {
    for section in elf.sections() {
        let searched = matches!(section.kind(), SectionKind::ReadOnlyData)
            || matches!(
                section.name(),
                Ok(".gopclntab" | ".data.rel.ro" | ".rodata" | ".go.buildinfo")
            );
        if !searched {
            continue;
        }
        let Ok(data) = section.data() else {
            continue;
        };
        for (marker, library) in STRIPPED_MARKERS {
            if memchr::memmem::find(data, marker).is_some() {
                return Some(*library);
            }
        }
    }
    None
}

fn unsupported_by_name(file_name: &str) -> Option<TlsLibrary> {
    let base = file_name.rsplit('/').next().unwrap_or(file_name);
    if base.starts_with("libgnutls.so") {
        Some(TlsLibrary::GnuTls)
    } else if base.starts_with("libnss3.so") || base.starts_with("libssl3.so") {
        Some(TlsLibrary::Nss)
    } else if base == "libjvm.so" {
        Some(TlsLibrary::JavaJsse)
    } else {
        None
    }
}

fn unsupported(library: TlsLibrary) -> TlsFinding {
    let reason = match library {
        TlsLibrary::GnuTls => {
            "GnuTLS is not supported: the probe hooks only OpenSSL, BoringSSL and Go crypto/tls"
        }
        TlsLibrary::Nss => {
            "NSS is not supported: the probe hooks only OpenSSL, BoringSSL and Go crypto/tls"
        }
        TlsLibrary::JavaJsse => {
            "Java (JSSE) encrypts in JIT-compiled code that uprobes cannot reach"
        }
        TlsLibrary::Rustls => {
            "rustls keeps its plaintext inside Rust code that has no stable symbols to probe"
        }
        _ => "this TLS library is not supported",
    };
    TlsFinding {
        library,
        plan: None,
        reason: Some(reason.to_string()),
    }
}

/// Converts a virtual address to a file offset through the loadable
/// segment that contains it; uprobes attach by file offset.
pub fn file_offset<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
    address: u64,
) -> Option<u64> {
    elf.segments().find_map(|segment| {
        let (file_start, file_size) = segment.file_range();
        let start = segment.address();
        (address >= start && address - start < file_size).then(|| address - start + file_start)
    })
}

/// The defined function symbols of one file that matter here.
pub struct Symbols {
    functions: std::collections::HashMap<String, (u64, u64)>,
    /// True when the file has a BoringSSL-only function.
    boringssl: bool,
    /// True when a symbol name contains `rustls`.
    rustls: bool,
    defined_count: usize,
    /// True when the file has no `.symtab`, only `.dynsym`.
    only_dynamic: bool,
}

/// Function names whose address and size are kept.
const KEPT_FUNCTIONS: &[&str] = &[
    "SSL_write",
    "SSL_read",
    "SSL_write_ex",
    "SSL_read_ex",
    golang::CONN_WRITE,
    golang::CONN_READ,
    golang::BUILD_VERSION,
];

/// Functions that only BoringSSL defines.
const BORINGSSL_ONLY: &[&str] = &["SSL_CTX_set_strict_cipher_list", "BORINGSSL_self_test"];

impl Symbols {
    fn collect<'data, R: ReadRef<'data>>(elf: &object::File<'data, R>) -> Self {
        let mut symbols = Self {
            functions: Default::default(),
            boringssl: false,
            rustls: false,
            defined_count: 0,
            only_dynamic: elf.symbol_table().is_none(),
        };
        for symbol in elf.symbols().chain(elf.dynamic_symbols()) {
            if symbol.is_undefined() {
                continue;
            }
            let Ok(name) = symbol.name() else {
                continue;
            };
            symbols.defined_count += 1;
            if !symbols.rustls && name.contains("rustls") {
                symbols.rustls = true;
            }
            if BORINGSSL_ONLY.contains(&name) {
                symbols.boringssl = true;
            }
            let kept = KEPT_FUNCTIONS.contains(&name)
                && matches!(symbol.kind(), SymbolKind::Text | SymbolKind::Data);
            if kept {
                symbols
                    .functions
                    .entry(name.to_string())
                    .or_insert((symbol.address(), symbol.size()));
            }
        }
        symbols
    }

    fn has_openssl_api(&self) -> bool {
        (self.functions.contains_key("SSL_write") || self.functions.contains_key("SSL_write_ex"))
            && (self.functions.contains_key("SSL_read")
                || self.functions.contains_key("SSL_read_ex"))
    }

    pub fn address(&self, name: &str) -> Option<u64> {
        self.functions.get(name).map(|(address, _)| *address)
    }

    /// Address and size of a function.
    pub fn function(&self, name: &str) -> Option<(u64, u64)> {
        self.functions.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_libssl_is_openssl() {
        let path = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let finding = inspect(path, "libssl.so.3").unwrap().unwrap();
        assert_eq!(finding.library, TlsLibrary::OpenSsl);
        let Some(AttachPlan::OpenSsl(offsets)) = finding.plan else {
            panic!("no attach plan: {:?}", finding.reason);
        };
        assert!(offsets.ssl_write.is_some());
        assert!(offsets.ssl_read.is_some());
        assert!(offsets.ssl_write_ex.is_some());
        assert!(offsets.ssl_read_ex.is_some());
    }

    #[test]
    fn libcrypto_has_no_tls() {
        let path = Path::new("/usr/lib/x86_64-linux-gnu/libcrypto.so.3");
        assert_eq!(inspect(path, "libcrypto.so.3").unwrap(), None);
    }

    #[test]
    fn node_carries_static_openssl() {
        let path = Path::new("/usr/bin/node");
        let real = std::fs::canonicalize(path).unwrap();
        let finding = inspect(&real, "node").unwrap().unwrap();
        assert_eq!(finding.library, TlsLibrary::OpenSsl);
        assert!(finding.plan.is_some(), "{:?}", finding.reason);
    }

    #[test]
    fn gnutls_is_reported_by_name() {
        let finding = inspect(Path::new("/nonexistent"), "/usr/lib/libgnutls.so.30")
            .unwrap()
            .unwrap();
        assert_eq!(finding.library, TlsLibrary::GnuTls);
        assert!(finding.plan.is_none());
        assert!(finding.reason.unwrap().contains("not supported"));
    }

    #[test]
    fn non_elf_file_is_an_error() {
        let error = inspect(Path::new("/etc/hostname"), "hostname").unwrap_err();
        assert!(matches!(error, ElfError::Parse { .. }), "{error}");
    }
}
