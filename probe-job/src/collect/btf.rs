//! Byte offsets of kernel struct members, read from the kernel's BTF.
//!
//! The probe needs a handful of offsets, not a type graph, so this reads
//! the type section once and answers `struct.member` for members that sit
//! directly in the struct. The `btf-rs` crate does more, but it is
//! LGPL-licensed, which a statically linked Apache-2.0 binary avoids.

use std::{fs, path::Path};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;

const KIND_STRUCT: u32 = 4;

/// The parsed type and string sections of one BTF blob.
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
}

impl Btf {
    /// Reads the kernel's BTF from `path` (`/sys/kernel/btf/vmlinux`).
    ///
    /// # Errors
    ///
    /// A message naming the file and what is wrong with it.
    pub fn read(path: &Path) -> Result<Self, String> {
        let data = fs::read(path)
            .map_err(|error| format!("{} cannot be read ({error})", path.display()))?;
        Self::parse(&data).map_err(|reason| format!("{}: {reason}", path.display()))
    }

    /// Parses a BTF blob in the host's byte order.
    ///
    /// # Errors
    ///
    /// What is wrong with the header or the section bounds.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        if data.len() < HEADER_LEN || read_u16(data, 0) != Some(MAGIC) {
            return Err("not BTF in this host's byte order".into());
        }
        let field = |at: usize| read_u32(data, at).map_or(0, |value| value as usize);
        let header_len = field(4);
        let section = |offset: usize, len: usize| {
            let start = header_len.checked_add(offset)?;
            data.get(start..start.checked_add(len)?)
        };
        let (Some(types), Some(strings)) =
            (section(field(8), field(12)), section(field(16), field(20)))
        else {
            return Err("a section lies outside the file".into());
        };
        Ok(Self {
            types: types.to_vec(),
            strings: strings.to_vec(),
        })
    }

    /// Byte offset of `member` in `struct name`, for a member declared
    /// directly in the struct (not inside an anonymous union) and not a
    /// bit field.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let mut at = 0;
        while at + TYPE_LEN <= self.types.len() {
            let name_off = read_u32(&self.types, at)?;
            let info = read_u32(&self.types, at + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let members_at = at + TYPE_LEN;
            if kind == KIND_STRUCT && self.string(name_off) == Some(name) {
                let bit_fields = info >> 31 == 1;
                for index in 0..vlen {
                    let entry = members_at + index * 12;
                    if self.string(read_u32(&self.types, entry)?) != Some(member) {
                        continue;
                    }
                    let offset = read_u32(&self.types, entry + 8)?;
                    let bits = if bit_fields {
                        offset & 0xff_ffff
                    } else {
                        offset
                    };
                    let bitfield_size = if bit_fields { offset >> 24 } else { 0 };
                    return (bits % 8 == 0 && bitfield_size == 0).then_some(bits / 8);
                }
            }
            at = members_at + extra_len(kind, vlen)?;
        }
        None
    }

    fn string(&self, offset: u32) -> Option<&str> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&byte| byte == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }
}

/// Length of the data that follows a type record of `kind`, per the
/// kernel's `Documentation/bpf/btf.rst`; `None` for kinds newer than this
/// reader, whose length it cannot know.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // INT, VAR, DECL_TAG: one u32.
        1 | 14 | 17 => 4,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT,
        // TYPE_TAG: nothing.
        2 | 7..=12 | 16 | 18 => 0,
        // ARRAY: element type, index type, count.
        3 => 12,
        // STRUCT, UNION, DATASEC, ENUM64: 12 bytes per member.
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM, FUNC_PROTO: 8 bytes per value or parameter.
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob with `int` and `struct pair { int a; int b; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0pair\0a\0b\0";
        let mut types = Vec::new();
        let mut put = |values: &[u32]| {
            for value in values {
                types.extend_from_slice(&value.to_ne_bytes());
            }
        };
        // [1] int: name "int", kind INT, size 4, encoding 32 bits signed.
        put(&[1, 1 << 24, 4, (1 << 24) | 32]);
        // [2] struct pair, two members, size 8.
        put(&[5, (4 << 24) | 2, 8]);
        put(&[10, 1, 0]);
        put(&[12, 1, 32]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_ne_bytes());
        blob.extend_from_slice(&[1, 0]);
        for value in [
            HEADER_LEN as u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&value.to_ne_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn finds_member_offsets() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("pair", "a"), Some(0));
        assert_eq!(btf.member_offset("pair", "b"), Some(4));
        assert_eq!(btf.member_offset("pair", "c"), None);
        assert_eq!(btf.member_offset("int", "a"), None);
    }

    #[test]
    fn rejects_truncated_blobs() {
        let blob = sample();
        assert!(Btf::parse(&blob[..HEADER_LEN - 1]).is_err());
        assert!(Btf::parse(&blob[..blob.len() - 1]).is_err());
        assert!(Btf::parse(b"not btf at all, not btf at all").is_err());
    }

    #[test]
    fn reads_the_kernel_sk_buff() {
        // The test hosts have BTF; the offsets of the TCP control block
        // have not moved in years.
        let btf = Btf::read(Path::new("/sys/kernel/btf/vmlinux")).unwrap();
        assert_eq!(btf.member_offset("sk_buff", "cb"), Some(40));
        assert_eq!(btf.member_offset("tcp_skb_cb", "seq"), Some(0));
    }
}
