/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The records the probe writes into the ring buffer, one per open, shared by the BPF program and
 * (mirrored with #[repr(C)], checked by a test against this object's BTF) by the Rust loader.
 *
 * Two kinds, told apart by their length, chosen when the probe is loaded:
 *  - compact (struct open_head, 32 bytes): whose open it was and what it returned. All that the
 *    agent's counting reads, and cheap to make and to move: no syscall arguments, no path copy,
 *    no thread id, two records to a cache line.
 *  - full (struct open_full, 320 bytes): the same head followed by the thread id, time, uid,
 *    flags, mode and path, for `splitscope trace`, the --path-prefix filter and the start-up
 *    self-test.
 * Both start with the head, so a reader finds the counting fields at the same offsets in either.
 * Fixed sizes, so that bpf_ringbuf_reserve() takes a constant; no implicit padding.
 *
 * Compact records travel in batches (struct open_batch): each CPU fills its own batch of
 * OPEN_BATCH_LEN heads and puts the whole batch into the ring when it is full, so the ring's
 * reserve and commit are paid once per OPEN_BATCH_LEN opens instead of once per open. A batch
 * that is not full yet is read where it is by user space (a copy of the per-CPU map), which
 * tells the heads it already counted from the ones still being written by the sequence numbers.
 */
#ifndef SPLITSCOPE_FILEOPEN_H
#define SPLITSCOPE_FILEOPEN_H

#define OPEN_EVENT_COMM_LEN 16
#define OPEN_EVENT_FNAME_LEN 256

/* Which system call the open came through. */
enum open_syscall {
	OPEN_SYSCALL_UNKNOWN = 0,
	OPEN_SYSCALL_OPEN = 1,
	OPEN_SYSCALL_OPENAT = 2,
	OPEN_SYSCALL_OPENAT2 = 3,
	OPEN_SYSCALL_CREAT = 4,
};

/* open_detail.eflags */
#define OPEN_EVENT_F_FNAME_FAULT 0x1     /* the path could not be read from user memory */
#define OPEN_EVENT_F_FNAME_TRUNCATED 0x2 /* the path filled fname: it may be longer */

/* open_head.tgid_syscall: the process id in the low bits (pids stay below PID_MAX_LIMIT, 2^22,
 * on 64-bit kernels), enum open_syscall in the high byte. */
#define OPEN_HEAD_TGID_MASK 0xffffff
#define OPEN_HEAD_SYSCALL_SHIFT 24

/* Every record starts with this; alone, it is the compact record. 32 bytes: every byte of it is
 * moved from the opening CPU to the reader's, so only what counting reads is in it. */
struct open_head {
	__u64 cgroup_id;     /* cgroup v2 id of the task = inode of its cgroup directory */
	__s32 ret;           /* the new fd, or -errno (the open syscalls return an int) */
	__u32 tgid_syscall;  /* process id | syscall << OPEN_HEAD_SYSCALL_SHIFT */
	char comm[OPEN_EVENT_COMM_LEN];
};

/* What a full record adds: the thread id, the open's arguments, the time and the uid. */
struct open_detail {
	__u64 ts_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 tid;
	__u32 uid;
	__u32 flags;     /* open(2) flags */
	__u32 mode;      /* open(2) mode (meaningful with O_CREAT / O_TMPFILE) */
	__u16 fname_len; /* bytes of fname before its NUL */
	__u8 eflags;     /* OPEN_EVENT_F_* */
	__u8 pad[5];
	char fname[OPEN_EVENT_FNAME_LEN];
};

struct open_full {
	struct open_head head;
	struct open_detail detail;
};

/* Heads per batch: a power of two (the slot is seq & (OPEN_BATCH_LEN - 1)). */
#define OPEN_BATCH_LEN 32

/*
 * One CPU's batch of compact records, the value of the per-CPU `batches` map and, when full, a
 * ring-buffer record. The CPU writes the head of its seq-th compact record to
 * rec[seq % OPEN_BATCH_LEN], then stores seq + 1 into seq (x86 keeps stores in order). A reader
 * that reads seq, copies the heads and reads seq again knows that the heads numbered below the
 * first value were written before its copy, and that a head is intact when it is numbered above
 * the second value - OPEN_BATCH_LEN: the slot of an older one may have been rewritten meanwhile.
 */
struct open_batch {
	__u64 seq; /* heads this CPU has written since the probe was loaded */
	__u32 cpu; /* set when the batch goes into the ring */
	__u32 pad;
	struct open_head rec[OPEN_BATCH_LEN];
	__u64 pad_end[6]; /* a whole number of cache lines (17): CPUs' batches never share one */
};

#endif /* SPLITSCOPE_FILEOPEN_H */
