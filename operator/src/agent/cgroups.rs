//! cgroup id → cgroup path, from the node's cgroup v2 tree.
//!
//! The id BPF reports is the inode number of the task's cgroup v2 directory, so a walk of the
//! tree maps every id to its path. The map is cached; an unknown id (a container that started
//! since) triggers a rescan, at most once per `RESCAN_INTERVAL` so that a storm of short-lived
//! cgroups cannot turn into a storm of tree walks. The gap is short: a container that fails at
//! start may live for less than a second, and its cgroup must be found while it exists (its
//! counts wait for it, count.rs); a walk of a node's tree takes milliseconds.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const RESCAN_INTERVAL: Duration = Duration::from_millis(100);

/// Where cgroup v2 is mounted (from /proc/self/mountinfo): `/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_mount_in(&info)
}

pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    let mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            // `id parent major:minor root mount-point options... - fstype source super-options`
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).map(PathBuf::from))?
        })
        .collect();
    // Prefer the conventional location when there are several (bind mounts into containers).
    mounts
        .iter()
        .find(|m| m.as_path() == Path::new("/sys/fs/cgroup"))
        .or_else(|| mounts.first())
        .cloned()
}

pub struct CgroupPaths {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupPaths {
    pub fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            paths: HashMap::new(),
            last_scan: None,
        }
    }

    /// Whether there is a tree to look ids up in (no cgroup v2 mount: nothing will ever be found).
    pub fn has_root(&self) -> bool {
        self.root.is_some()
    }

    /// The path of cgroup `id` relative to the cgroup v2 root (`/` for the root itself).
    /// `None` when the id is still unknown after a (rate-limited) rescan.
    pub fn path(&mut self, id: u64) -> Option<&str> {
        if !self.paths.contains_key(&id) {
            let due = self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_INTERVAL);
            if due {
                self.rescan();
            }
        }
        self.paths.get(&id).map(String::as_str)
    }

    /// Whether a rescan since the last call found new ids (then earlier answers may change).
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else { return };
        let mut paths = HashMap::with_capacity(self.paths.len().max(64));
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir
                .strip_prefix(&root)
                .map_or_else(|_| "/".to_owned(), |r| format!("/{}", r.to_string_lossy()));
            paths.insert(meta.ino(), rel);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        self.paths = paths;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "30 24 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n\
                       99 30 0:26 / /host/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount_in(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_mount_in("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn maps_directory_inodes_to_relative_paths() {
        let dir = std::env::temp_dir().join(format!("splitscope-cgpaths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let mut paths = CgroupPaths::new(Some(dir.clone()));
        let b = std::fs::metadata(dir.join("a/b")).unwrap().ino();
        let root = std::fs::metadata(&dir).unwrap().ino();
        assert_eq!(paths.path(b), Some("/a/b"));
        assert_eq!(paths.path(root), Some("/"));
        // A directory made after the scan is found only after the rate limit allows a rescan.
        std::fs::create_dir_all(dir.join("c")).unwrap();
        let c = std::fs::metadata(dir.join("c")).unwrap().ino();
        assert_eq!(paths.path(c), None);
        paths.rescan();
        assert_eq!(paths.path(c), Some("/c"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
