//! Byte offsets of kernel struct members, read from the kernel's BTF.
//!
//! The probe needs a handful of offsets, not a type graph, so this reads
//! the type section once and answers `struct.member` for members that sit
//! in the struct, directly or inside anonymous structs and unions (as the
//! kernel's `struct_group()` declares some `sk_buff` members). The
//! `btf-rs` crate does more, but it is LGPL-licensed, which a statically
//! linked Apache-2.0 binary avoids.

use std::{fs, path::Path};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;
const MEMBER_LEN: usize = 12;

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// Maximum nesting of anonymous members that a lookup descends, and maximum
/// chain of typedefs and qualifiers it follows to reach one. Kernel 6.18
/// nests six deep (in `struct slab`). The bound stops at type cycles in a
/// malformed blob.
const MAX_DEPTH: u32 = 8;

/// Maximum number of anonymous members that one lookup in one struct
/// enters. Kernel 6.18 needs at most 23 (in `struct net_device_stats`).
/// Without this bound, a malformed blob whose anonymous members share
/// types could cost time exponential in `MAX_DEPTH`.
const MAX_VISITS: u32 = 256;

/// The parsed type and string sections of one BTF blob.
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// Position in `types` of each type record: type id `n` is entry
    /// `n - 1`, as id 0 is `void`. Stops before the first record that is
    /// truncated or of a kind this reader cannot measure.
    records: Vec<usize>,
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
            records: index_records(types),
            types: types.to_vec(),
            strings: strings.to_vec(),
        })
    }

    /// Byte offset of `member` in `struct name`, for a member declared in
    /// the struct directly or inside anonymous structs and unions, at any
    /// depth up to a bound. `None` if no struct of that name has the
    /// member, or if it is a bit field or does not start on a whole byte.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let bits = self.records.iter().find_map(|&at| {
            let (name_off, info) = (read_u32(&self.types, at)?, read_u32(&self.types, at + 4)?);
            if kind(info) != KIND_STRUCT || self.string(name_off) != Some(name) {
                return None;
            }
            let mut visits = MAX_VISITS;
            self.find_member(at, member, MAX_DEPTH, &mut visits)
        })?;
        bits.filter(|bits| bits % 8 == 0).map(|bits| bits / 8)
    }

    /// Looks for `member` in the struct or union whose record starts at
    /// `at`, descending into anonymous struct and union members at most
    /// `depth` levels deep and `visits` times in all. The outer `None`
    /// means the member is not there. The inner `None` means it is a bit
    /// field or its offset overflows. Otherwise the result is the offset in
    /// bits, including those of the enclosing anonymous members.
    fn find_member(
        &self,
        at: usize,
        member: &str,
        depth: u32,
        visits: &mut u32,
    ) -> Option<Option<u32>> {
        let info = read_u32(&self.types, at + 4)?;
        if !matches!(kind(info), KIND_STRUCT | KIND_UNION) {
            return None;
        }
        let bit_fields = info >> 31 == 1;
        for index in 0..vlen(info) {
            let entry = at + TYPE_LEN + index * MEMBER_LEN;
            let name_off = read_u32(&self.types, entry)?;
            let offset = read_u32(&self.types, entry + 8)?;
            // With kind_flag set, the top byte is a bit field's width.
            let bits = if bit_fields {
                (offset >> 24 == 0).then_some(offset & 0xff_ffff)
            } else {
                Some(offset)
            };
            if name_off != 0 {
                if self.string(name_off) == Some(member) {
                    return Some(bits);
                }
            } else if depth > 0 && *visits > 0 {
                *visits -= 1;
                let inner = self
                    .resolve(read_u32(&self.types, entry + 4)?)
                    .and_then(|inner_at| self.find_member(inner_at, member, depth - 1, visits));
                if let Some(inner) = inner {
                    return Some(
                        bits.zip(inner)
                            .and_then(|(outer, inner)| outer.checked_add(inner)),
                    );
                }
            }
        }
        None
    }

    /// Returns the position of the record of type `id`, following typedefs
    /// and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<usize> {
        for _ in 0..MAX_DEPTH {
            let at = *self.records.get((id as usize).checked_sub(1)?)?;
            let info = read_u32(&self.types, at + 4)?;
            match kind(info) {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = read_u32(&self.types, at + 8)?;
                }
                _ => return Some(at),
            }
        }
        None
    }

    fn string(&self, offset: u32) -> Option<&str> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&byte| byte == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }
}

/// Positions of the type records in `types`, in type id order, up to the
/// first record that is truncated or whose length this reader cannot know.
fn index_records(types: &[u8]) -> Vec<usize> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(info) = read_u32(types, at + 4) {
        let Some(end) = extra_len(kind(info), vlen(info))
            .and_then(|extra| (at + TYPE_LEN).checked_add(extra))
            .filter(|&end| end <= types.len())
        else {
            break;
        };
        records.push(at);
        at = end;
    }
    records
}

fn kind(info: u32) -> u32 {
    (info >> 24) & 0x1f
}

fn vlen(info: u32) -> usize {
    (info & 0xffff) as usize
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

    const KIND_INT: u32 = 1;

    /// Assembles a BTF blob; type ids follow the order of the records.
    struct Blob {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Blob {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }

        /// Adds `name` to the string section; "" is the anonymous name 0.
        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            offset
        }

        fn put(&mut self, values: &[u32]) {
            for value in values {
                self.types.extend_from_slice(&value.to_ne_bytes());
            }
        }

        /// Adds a 4-byte signed `int` named `name`.
        fn int(&mut self, name: &str) {
            let name = self.name(name);
            self.put(&[name, KIND_INT << 24, 4, (1 << 24) | 32]);
        }

        /// Adds a struct or union whose members are (name, type id, offset).
        /// With `kind_flag`, an offset's top byte is its bit field width.
        fn aggregate(
            &mut self,
            kind: u32,
            name: &str,
            kind_flag: bool,
            members: &[(&str, u32, u32)],
        ) {
            let name = self.name(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | members.len() as u32;
            self.put(&[name, info, 8]);
            for &(member, type_id, offset) in members {
                let member = self.name(member);
                self.put(&[member, type_id, offset]);
            }
        }

        /// Adds an anonymous typedef or qualifier of type `type_id`.
        fn modifier(&mut self, kind: u32, type_id: u32) {
            self.put(&[0, kind << 24, type_id]);
        }

        fn build(&self) -> Vec<u8> {
            let mut blob = Vec::new();
            blob.extend_from_slice(&MAGIC.to_ne_bytes());
            blob.extend_from_slice(&[1, 0]);
            for value in [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                blob.extend_from_slice(&value.to_ne_bytes());
            }
            blob.extend_from_slice(&self.types);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }

    /// Builds a BTF blob with `int` and `struct pair { int a; int b; }`.
    fn sample() -> Vec<u8> {
        let mut blob = Blob::new();
        // [1] int
        blob.int("int");
        // [2] struct pair
        blob.aggregate(KIND_STRUCT, "pair", false, &[("a", 1, 0), ("b", 1, 32)]);
        blob.build()
    }

    /// Builds a BTF blob with anonymous members, a named nested struct and
    /// two malformed structs whose anonymous members lead in a circle:
    ///
    /// ```c
    /// struct outer {
    ///     int x;
    ///     union {
    ///         int z;
    ///         const struct { int w; int y; int flag: 3; };
    ///     };
    ///     struct named { int v; } n;
    /// };
    /// ```
    fn nested() -> Vec<u8> {
        let mut blob = Blob::new();
        // [1] int
        blob.int("int");
        // [2] struct outer
        let outer = [("x", 1, 0), ("", 3, 64), ("n", 6, 128)];
        blob.aggregate(KIND_STRUCT, "outer", false, &outer);
        // [3] the anonymous union, with the struct behind a qualifier
        blob.aggregate(KIND_UNION, "", false, &[("z", 1, 0), ("", 5, 0)]);
        // [4] the anonymous struct, with a bit field
        let inner = [("w", 1, 0), ("y", 1, 32), ("flag", 1, (3 << 24) | 64)];
        blob.aggregate(KIND_STRUCT, "", true, &inner);
        // [5] const [4]
        blob.modifier(KIND_CONST, 4);
        // [6] struct named
        blob.aggregate(KIND_STRUCT, "named", false, &[("v", 1, 0)]);
        // [7] struct cycle, holding itself, [8] and a type that is not there
        let cycle = [("", 7, 0), ("", 8, 0), ("", 99, 0)];
        blob.aggregate(KIND_STRUCT, "cycle", false, &cycle);
        // [8] a typedef of itself
        blob.modifier(KIND_TYPEDEF, 8);
        blob.build()
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
    fn finds_members_of_anonymous_members() {
        let btf = Btf::parse(&nested()).unwrap();
        assert_eq!(btf.member_offset("outer", "x"), Some(0));
        assert_eq!(btf.member_offset("outer", "z"), Some(8));
        assert_eq!(btf.member_offset("outer", "w"), Some(8));
        assert_eq!(btf.member_offset("outer", "y"), Some(12));
        assert_eq!(btf.member_offset("outer", "flag"), None);
        assert_eq!(btf.member_offset("outer", ""), None);
    }

    #[test]
    fn skips_members_of_named_members() {
        let btf = Btf::parse(&nested()).unwrap();
        assert_eq!(btf.member_offset("outer", "n"), Some(16));
        assert_eq!(btf.member_offset("outer", "v"), None);
        assert_eq!(btf.member_offset("named", "v"), Some(0));
    }

    #[test]
    fn stops_at_type_cycles() {
        let btf = Btf::parse(&nested()).unwrap();
        assert_eq!(btf.member_offset("cycle", "x"), None);
    }

    #[test]
    fn bounds_the_work_on_shared_types() {
        // Ten structs, each with a thousand anonymous members of the next:
        // an unbounded search would visit 1000^8 members.
        let mut blob = Blob::new();
        blob.int("int");
        for id in 2..12 {
            let name = if id == 2 { "wide" } else { "" };
            blob.aggregate(KIND_STRUCT, name, false, &[("", id + 1, 0); 1000]);
        }
        blob.aggregate(KIND_STRUCT, "", false, &[("deep", 1, 0)]);
        let btf = Btf::parse(&blob.build()).unwrap();
        assert_eq!(btf.member_offset("wide", "deep"), None);
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

        // The u16 header offsets sit side by side, inside the anonymous
        // union of struct_group(headers) and after the 48-byte `cb`.
        let offset = |name, member| btf.member_offset(name, member).unwrap();
        let network = offset("sk_buff", "network_header");
        assert_eq!(offset("sk_buff", "transport_header") + 2, network);
        assert_eq!(network + 2, offset("sk_buff", "mac_header"));
        assert_eq!(network % 2, 0);
        assert!(network >= 40 + 48);
        assert!(network < 256);

        // On 64-bit kernels, `end` is a u32 offset right before `head`.
        let head = offset("sk_buff", "head");
        assert_eq!(offset("sk_buff", "end") + 4, head);
        assert_eq!(head % 8, 0);
        assert!(head > network);
        assert!(head < 256);

        // Both GSO fields are u16, at the start of the struct.
        let segs = offset("skb_shared_info", "gso_segs");
        assert_eq!(offset("skb_shared_info", "gso_size") + 2, segs);
        assert!(segs < 16);
    }
}
