//! Names of open(2) flags (x86-64 values, include/uapi/asm-generic/fcntl.h), for `trace`.

const ACCMODE: u32 = 0o3;

/// Flag bits in display order. O_SYNC is `__O_SYNC | O_DSYNC` and O_TMPFILE is
/// `__O_TMPFILE | O_DIRECTORY`: both are named by their own bit and the shared bit follows.
const BITS: &[(u32, &str)] = &[
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o10000, "O_DSYNC"),
    (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o4000000, "O_SYNC"),
    (0o10000000, "O_PATH"),
    (0o20000000, "O_TMPFILE"),
];

/// The flags as names: the access mode first, then every set bit; unknown bits in octal.
pub fn flag_names(flags: u32) -> Vec<&'static str> {
    let mut names = vec![match flags & ACCMODE {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    }];
    names.extend(
        BITS.iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, name)| *name),
    );
    names
}

/// `O_RDONLY|O_CLOEXEC`-style text; bits without a name are appended in octal.
pub fn format_flags(flags: u32) -> String {
    let mut text = flag_names(flags).join("|");
    let known = BITS.iter().fold(ACCMODE, |acc, (bit, _)| acc | bit);
    let unknown = flags & !known;
    if unknown != 0 {
        text.push_str(&format!("|0{unknown:o}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_common_combinations() {
        assert_eq!(format_flags(0), "O_RDONLY");
        assert_eq!(
            format_flags(libc::O_RDONLY as u32 | libc::O_CLOEXEC as u32),
            "O_RDONLY|O_CLOEXEC"
        );
        let creat = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u32;
        assert_eq!(format_flags(creat), "O_WRONLY|O_CREAT|O_TRUNC");
        assert_eq!(format_flags(libc::O_RDWR as u32 | 0o40000000), "O_RDWR|040000000");
    }

    /// The kernel's O_LARGEFILE bit: glibc defines O_LARGEFILE as 0 on 64-bit (it is implied),
    /// but the kernel sets its own bit on every file a 64-bit process opens, and F_GETFL shows it.
    fn kernel_largefile_bit() -> i32 {
        let path = std::ffi::CString::new("/proc/self/stat").unwrap();
        let fd = crate::raw_open::open_via("open", &path, libc::O_RDONLY, 0).unwrap();
        // SAFETY: F_GETFL on a descriptor we own.
        let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::F_GETFL) };
        assert!(flags >= 0, "F_GETFL failed");
        flags & !libc::O_ACCMODE
    }

    #[test]
    fn every_flag_is_named_by_its_libc_value() {
        assert_eq!(
            libc::O_LARGEFILE,
            0,
            "glibc's 64-bit O_LARGEFILE, as the helper above assumes"
        );
        let mut checked = std::collections::HashSet::new();
        for (bit, name) in BITS {
            let value = match *name {
                "O_CREAT" => libc::O_CREAT,
                "O_EXCL" => libc::O_EXCL,
                "O_NOCTTY" => libc::O_NOCTTY,
                "O_TRUNC" => libc::O_TRUNC,
                "O_APPEND" => libc::O_APPEND,
                "O_NONBLOCK" => libc::O_NONBLOCK,
                "O_DSYNC" => libc::O_DSYNC,
                "O_ASYNC" => libc::O_ASYNC,
                "O_DIRECT" => libc::O_DIRECT,
                "O_LARGEFILE" => kernel_largefile_bit(),
                "O_DIRECTORY" => libc::O_DIRECTORY,
                "O_NOFOLLOW" => libc::O_NOFOLLOW,
                "O_NOATIME" => libc::O_NOATIME,
                "O_CLOEXEC" => libc::O_CLOEXEC,
                // libc's O_SYNC is __O_SYNC | O_DSYNC and O_TMPFILE is __O_TMPFILE | O_DIRECTORY;
                // the table names each by its own bit.
                "O_SYNC" => libc::O_SYNC & !libc::O_DSYNC,
                "O_PATH" => libc::O_PATH,
                "O_TMPFILE" => libc::O_TMPFILE & !libc::O_DIRECTORY,
                other => panic!("{other} is in the table but not checked against libc here"),
            };
            assert_eq!(*bit, value as u32, "{name}");
            assert_eq!(bit.count_ones(), 1, "{name} is one bit");
            assert!(checked.insert(*bit), "{name}: bit {bit:o} named twice");
        }
        assert_eq!(
            checked.len(),
            17,
            "every open(2) flag bit of x86-64 Linux has a name"
        );
        for (mode, name) in [
            (libc::O_RDONLY, "O_RDONLY"),
            (libc::O_WRONLY, "O_WRONLY"),
            (libc::O_RDWR, "O_RDWR"),
        ] {
            assert_eq!(flag_names(mode as u32), vec![name]);
        }
    }

    #[test]
    fn composite_flags_show_every_bit_they_set() {
        assert_eq!(format_flags(libc::O_SYNC as u32), "O_RDONLY|O_DSYNC|O_SYNC");
        assert_eq!(
            format_flags((libc::O_TMPFILE | libc::O_RDWR) as u32),
            "O_RDWR|O_DIRECTORY|O_TMPFILE"
        );
    }
}
