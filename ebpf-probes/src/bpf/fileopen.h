/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The record the probe writes into the ring buffer for every open, shared by the BPF program and
 * (mirrored with #[repr(C)], checked by a test against this object's BTF) by the Rust loader.
 * Fixed size so that bpf_ringbuf_reserve() takes a constant; 8-byte fields first, no padding.
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

/* open_event.eflags */
#define OPEN_EVENT_F_FNAME_FAULT 0x1     /* the path could not be read from user memory */
#define OPEN_EVENT_F_FNAME_TRUNCATED 0x2 /* the path filled fname: it may be longer */

struct open_event {
	__u64 ts_ns;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 cgroup_id; /* cgroup v2 id of the task = inode of its cgroup directory */
	__s64 ret;       /* the new fd, or -errno */
	__u32 pid;       /* thread id */
	__u32 tgid;      /* process id */
	__u32 uid;
	__u32 flags; /* open(2) flags */
	__u32 mode;  /* open(2) mode (meaningful with O_CREAT / O_TMPFILE) */
	__u16 fname_len; /* bytes of fname before its NUL */
	__u8 syscall;    /* enum open_syscall */
	__u8 eflags;     /* OPEN_EVENT_F_* */
	char comm[OPEN_EVENT_COMM_LEN];
	char fname[OPEN_EVENT_FNAME_LEN];
};

#endif /* SPLITSCOPE_FILEOPEN_H */
