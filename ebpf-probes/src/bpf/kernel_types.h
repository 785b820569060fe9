/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The few kernel types the probe touches, hand-written for CO-RE.
 *
 * Why not vmlinux.h: a full dump of one kernel's BTF is ~2.8 MB of generated C that must be
 * regenerated and reviewed per kernel. The probe reads a few things (the syscall tracepoint
 * records, the saved user registers, the kprobe registers, struct open_how and a few fields of
 * the current task), so these
 * definitions carry only the fields used, marked preserve_access_index: clang records every
 * field access as a CO-RE relocation and the loader rewrites the offsets against the running
 * kernel's own BTF (/sys/kernel/btf/vmlinux). A field that moved between kernels still reads
 * right; a field that vanished fails the load with a clear relocation error instead of reading
 * garbage.
 */
#ifndef SPLITSCOPE_KERNEL_TYPES_H
#define SPLITSCOPE_KERNEL_TYPES_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* UAPI (include/uapi/linux/bpf.h): filled by bpf_get_ns_current_pid_tgid. */
struct bpf_pidns_info {
	__u32 pid;
	__u32 tgid;
};

/* UAPI constants (include/uapi/linux/bpf.h); stable ABI values. */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_CGROUP_ARRAY = 8,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum {
	BPF_ANY = 0,
};
enum {
	BPF_F_MMAPABLE = 1U << 10,
};
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};
enum {
	BPF_RB_AVAIL_DATA = 0,
};

/* Tells bpf_tracing.h that kernel-side pt_regs field names (di, si, ...) are in scope. */
#define __VMLINUX_H__

#if defined(__TARGET_ARCH_x86)
/* arch/x86/include/asm/ptrace.h: the kprobe context and the registers saved at syscall entry. */
struct pt_regs {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long bp;
	unsigned long bx;
	unsigned long r11;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long ax;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
	unsigned long ip;
	unsigned long cs;
	unsigned long flags;
	unsigned long sp;
	unsigned long ss;
} __attribute__((preserve_access_index));
#else
#error "splitscope's probe reads x86-64 registers; build with -D__TARGET_ARCH_x86"
#endif

/* include/uapi/linux/openat2.h */
struct open_how {
	__u64 flags;
	__u64 mode;
	__u64 resolve;
} __attribute__((preserve_access_index));

/*
 * The records of the syscalls:sys_enter_<name> / sys_exit_<name> tracepoints
 * (kernel/trace/trace_syscalls.c, struct syscall_trace_enter/exit). Their layout is the ABI
 * printed in tracefs events/syscalls/<event>/format, so no CO-RE here. Note the syscall number
 * is an int: the raw_syscalls events' `long id` layout (trace_event_raw_sys_exit) is different.
 */
struct syscall_trace_enter {
	__u64 common; /* common_type, common_flags, common_preempt_count, common_pid */
	int nr;
	unsigned long args[6]; /* as many as the syscall has: read no further */
};

struct syscall_trace_exit {
	__u64 common;
	int nr;
	long ret;
};

/*
 * include/linux/kernfs.h, cgroup-defs.h, sched.h: the current task's comm and cgroup v2 id, read
 * straight from the task (bpf_get_current_task_btf) instead of through two helper calls each
 * copying them (bpf_get_current_comm, bpf_get_current_cgroup_id), which cost about twice as
 * much here. The chain task->cgroups->dfl_cgrp->kn->id is what bpf_get_current_cgroup_id reads.
 */
struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

/* arch/x86/include/asm/thread_info.h: `status` has TS_COMPAT while a 32-bit syscall runs. */
struct thread_info {
	__u32 status;
} __attribute__((preserve_access_index));

struct task_struct {
	struct thread_info thread_info;
	int pid;
	int tgid;
	char comm[16];
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

#endif /* SPLITSCOPE_KERNEL_TYPES_H */
