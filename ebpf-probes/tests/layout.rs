//! The Rust mirror of `struct open_event` must match what clang laid out for the BPF target.
//! This reads the struct's layout from the BTF of the very object the loader embeds, so the test
//! fails as soon as the C header and `RawOpenEvent` diverge in size, order, offset or field size.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use object::{Object, ObjectSection};
use splitscope_probes::event::RawOpenEvent;
use splitscope_probes::loader::PROBE_OBJECT;

struct Btf<'a> {
    types: Vec<(u32, u32, u32, &'a [u8])>, // (name_off, info, size_or_type, extra bytes)
    strings: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Self {
        assert_eq!(
            u16::from_le_bytes([data[0], data[1]]),
            0xeb9f,
            "not little-endian BTF"
        );
        let hdr_len = u32_at(data, 4) as usize;
        let (type_off, type_len) = (u32_at(data, 8) as usize, u32_at(data, 12) as usize);
        let (str_off, str_len) = (u32_at(data, 16) as usize, u32_at(data, 20) as usize);
        let raw = &data[hdr_len + type_off..hdr_len + type_off + type_len];
        let strings = &data[hdr_len + str_off..hdr_len + str_off + str_len];
        let mut types = vec![(0, 0, 0, &raw[..0])]; // type id 0 is void
        let mut at = 0;
        while at < raw.len() {
            let (name, info, size) = (u32_at(raw, at), u32_at(raw, at + 4), u32_at(raw, at + 8));
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
                _ => 0,
            };
            types.push((name, info, size, &raw[at + 12..at + 12 + extra]));
            at += 12 + extra;
        }
        Self { types, strings }
    }

    fn name(&self, off: u32) -> &str {
        let s = &self.strings[off as usize..];
        std::str::from_utf8(&s[..s.iter().position(|&b| b == 0).unwrap()]).unwrap()
    }

    fn size_of(&self, id: u32) -> usize {
        let (_, info, size, extra) = self.types[id as usize];
        match (info >> 24) & 0x1f {
            1 | 4 | 5 | 6 | 16 | 19 => size as usize,
            3 => self.size_of(u32_at(extra, 0)) * u32_at(extra, 8) as usize,
            8..=11 | 18 => self.size_of(size),
            kind => panic!("unexpected BTF kind {kind} in open_event"),
        }
    }

    /// (size, [(member, bit offset, byte size)]) of `struct name`.
    fn struct_layout(&self, name: &str) -> (usize, Vec<(String, usize, usize)>) {
        let (_, info, size, extra) = *self
            .types
            .iter()
            .find(|(n, info, _, _)| (info >> 24) & 0x1f == 4 && self.name(*n) == name)
            .unwrap_or_else(|| panic!("struct {name} not in the object's BTF"));
        let members = (0..(info & 0xffff) as usize)
            .map(|i| {
                let m = &extra[i * 12..];
                let offset = u32_at(m, 8);
                let bits = if info >> 31 == 1 {
                    offset & 0xff_ffff
                } else {
                    offset
                };
                (
                    self.name(u32_at(m, 0)).to_owned(),
                    bits as usize,
                    self.size_of(u32_at(m, 4)),
                )
            })
            .collect();
        (size as usize, members)
    }
}

#[test]
fn rust_and_c_agree_on_open_event() {
    let elf = object::File::parse(PROBE_OBJECT).expect("the embedded probe is an ELF object");
    let btf_section = elf.section_by_name(".BTF").expect("the probe has BTF (-g)");
    let btf = Btf::parse(btf_section.data().unwrap());
    let (size, members) = btf.struct_layout("open_event");

    macro_rules! field {
        ($f:ident) => {{
            let probe = RawOpenEvent {
                ts_ns: 0,
                cgroup_id: 0,
                ret: 0,
                pid: 0,
                tgid: 0,
                uid: 0,
                flags: 0,
                mode: 0,
                fname_len: 0,
                syscall: 0,
                eflags: 0,
                comm: [0; 16],
                fname: [0; 256],
            };
            (
                stringify!($f),
                offset_of!(RawOpenEvent, $f),
                std::mem::size_of_val(&probe.$f),
            )
        }};
    }
    let rust: Vec<(&str, usize, usize)> = vec![
        field!(ts_ns),
        field!(cgroup_id),
        field!(ret),
        field!(pid),
        field!(tgid),
        field!(uid),
        field!(flags),
        field!(mode),
        field!(fname_len),
        field!(syscall),
        field!(eflags),
        field!(comm),
        field!(fname),
    ];

    assert_eq!(size, size_of::<RawOpenEvent>(), "sizeof(struct open_event)");
    let c: Vec<(&str, usize, usize)> = members
        .iter()
        .map(|(n, bits, sz)| (n.as_str(), bits / 8, *sz))
        .collect();
    assert_eq!(c, rust, "(field, offset, size) in C (left) and Rust (right)");
    let by_name: HashMap<_, _> = members.iter().map(|(n, b, _)| (n.as_str(), *b)).collect();
    assert!(by_name.values().all(|bits| bits % 8 == 0), "no bitfields");
}
