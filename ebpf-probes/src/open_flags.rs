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

    #[test]
    fn values_match_libc() {
        for (bit, name) in BITS {
            let libc_value = match *name {
                "O_CREAT" => libc::O_CREAT,
                "O_EXCL" => libc::O_EXCL,
                "O_TRUNC" => libc::O_TRUNC,
                "O_APPEND" => libc::O_APPEND,
                "O_NONBLOCK" => libc::O_NONBLOCK,
                "O_DIRECTORY" => libc::O_DIRECTORY,
                "O_NOFOLLOW" => libc::O_NOFOLLOW,
                "O_CLOEXEC" => libc::O_CLOEXEC,
                "O_PATH" => libc::O_PATH,
                _ => continue,
            };
            assert_eq!(*bit, libc_value as u32, "{name}");
        }
    }
}
