//! Every process a real-kernel test starts, in its own process group, killed with everything it
//! started when the test ends, however it ends.

use std::io;
use std::ops::{Deref, DerefMut};

use tokio::process::{Child, Command};

/// A child process that leads its own process group. Dropping it SIGKILLs the whole group: the
/// child and whatever it started — the agent that `unshare --fork` runs, say — which
/// `kill_on_drop` alone does not reach. Drops run while a panicking test unwinds, so a failed
/// assertion cleans up as a passing test does. If the test process dies without unwinding, the
/// child still gets SIGKILL (PR_SET_PDEATHSIG) when the test's thread ends; its own children are
/// then the child's to stop (`unshare --kill-child`).
pub struct GroupChild {
    child: Child,
    pgid: i32,
}

impl GroupChild {
    pub fn spawn(command: &mut Command) -> io::Result<Self> {
        command.process_group(0).kill_on_drop(true);
        // SAFETY: only prctl(2), which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| io::Error::other("a child just spawned has no pid"))?;
        Ok(Self { child, pgid })
    }

    /// The child's pid (and its process group's id).
    pub fn pid(&self) -> u32 {
        self.pgid as u32
    }
}

impl Deref for GroupChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for GroupChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        // The group outlives its leader while any member lives, so this reaches an orphaned
        // grandchild too. (Should every member have exited and been reaped, the id could in
        // principle be reused; pids are not reused that fast, and the test is ending.)
        // SAFETY: kill(2) on the process group this guard created; no memory is involved.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
        // Reap the child here rather than leave a zombie for whoever adopts it.
        for _ in 0..200 {
            if self.child.try_wait().map_or(true, |status| status.is_some()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
