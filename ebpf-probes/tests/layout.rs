//! The Rust mirrors of the ring-buffer records must match what clang laid out for the BPF target,
//! for both record kinds: the compact record (`struct open_head`) and the full one (`struct
//! open_full` = head + `struct open_detail`), and for the per-CPU batch of compact records
//! (`struct open_batch`). This reads the structs' layouts from the BTF of the
//! very object the loader embeds, so the test fails as soon as the C header and the Rust types
//! diverge in size, order, offset or field size.

use std::mem::{offset_of, size_of, size_of_val};

use object::{Object, ObjectSection};
use splitscope_probes::event::{
    BATCH_LEN, BATCH_RECORD_SIZE, COMPACT_RECORD_SIZE, FULL_RECORD_SIZE, RawOpenBatch, RawOpenDetail,
    RawOpenFull, RawOpenHead, sample,
};
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
            kind => panic!("unexpected BTF kind {kind} in a record"),
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

fn btf() -> Vec<u8> {
    let elf = object::File::parse(PROBE_OBJECT).expect("the embedded probe is an ELF object");
    let btf_section = elf.section_by_name(".BTF").expect("the probe has BTF (-g)");
    btf_section.data().unwrap().to_vec()
}

/// (field, byte offset, byte size) of `struct name` in the probe's BTF; asserts it has no
/// bitfields and returns its size too.
fn c_layout(btf: &Btf<'_>, name: &str) -> (usize, Vec<(String, usize, usize)>) {
    let (size, members) = btf.struct_layout(name);
    assert!(
        members.iter().all(|(_, bits, _)| bits % 8 == 0),
        "no bitfields in {name}"
    );
    let members = members
        .into_iter()
        .map(|(n, bits, sz)| (n, bits / 8, sz))
        .collect();
    (size, members)
}

/// (field, offset_of!, size of the field) of a Rust value's fields.
macro_rules! rust_layout {
    ($ty:ident, $value:expr, [$($f:ident),* $(,)?]) => {{
        let value: &$ty = &$value;
        vec![$((stringify!($f).to_owned(), offset_of!($ty, $f), size_of_val(&value.$f))),*]
    }};
}

#[test]
fn rust_and_c_agree_on_the_compact_record() {
    let data = btf();
    let btf = Btf::parse(&data);
    let (size, c) = c_layout(&btf, "open_head");
    let rust = rust_layout!(
        RawOpenHead,
        sample(0, "", "", 0).head,
        [cgroup_id, ret, tgid_syscall, comm]
    );
    assert_eq!(size, size_of::<RawOpenHead>(), "sizeof(struct open_head)");
    assert_eq!(size, COMPACT_RECORD_SIZE);
    assert_eq!(c, rust, "(field, offset, size) in C (left) and Rust (right)");
}

#[test]
fn rust_and_c_agree_on_the_full_record() {
    let data = btf();
    let btf = Btf::parse(&data);
    let raw = sample(0, "", "", 0);

    let (size, c) = c_layout(&btf, "open_detail");
    let rust = rust_layout!(
        RawOpenDetail,
        raw.detail,
        [ts_ns, tid, uid, flags, mode, fname_len, eflags, pad, fname]
    );
    assert_eq!(size, size_of::<RawOpenDetail>(), "sizeof(struct open_detail)");
    assert_eq!(
        c, rust,
        "open_detail: (field, offset, size) in C (left) and Rust (right)"
    );

    let (size, c) = c_layout(&btf, "open_full");
    let rust = rust_layout!(RawOpenFull, raw, [head, detail]);
    assert_eq!(size, size_of::<RawOpenFull>(), "sizeof(struct open_full)");
    assert_eq!(size, FULL_RECORD_SIZE);
    assert_eq!(
        c, rust,
        "open_full: (field, offset, size) in C (left) and Rust (right)"
    );
}

#[test]
fn rust_and_c_agree_on_the_batch_of_compact_records() {
    let data = btf();
    let btf = Btf::parse(&data);
    let head = sample(0, "", "", 0).head;
    let batch = RawOpenBatch {
        seq: 0,
        cpu: 0,
        pad: 0,
        rec: [head; BATCH_LEN],
        pad_end: [0; 6],
    };
    let (size, c) = c_layout(&btf, "open_batch");
    let rust = rust_layout!(RawOpenBatch, batch, [seq, cpu, pad, rec, pad_end]);
    assert_eq!(size, size_of::<RawOpenBatch>(), "sizeof(struct open_batch)");
    assert_eq!(size, BATCH_RECORD_SIZE);
    assert_eq!(size % 64, 0, "a whole number of cache lines");
    assert_eq!(
        c, rust,
        "open_batch: (field, offset, size) in C (left) and Rust (right)"
    );
}
