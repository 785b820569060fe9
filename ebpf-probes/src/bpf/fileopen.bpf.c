// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * File-open tracer: one ring-buffer record per open(2), openat(2), openat2(2) and creat(2).
 *
 * Attach points (user space picks one set, see the loader's attach plan):
 *  - fexit on do_sys_openat2 (a BPF trampoline, Linux >= 5.6 with BTF): one program that is
 *    handed the open's arguments and its result together, called only for opens, so it costs
 *    no other syscall anything and, unlike a kretprobe, follows any number of opens at once.
 *  - kprobe + kretprobe on the kernel's open path (do_sys_openat2 or do_sys_open): the entry
 *    keeps the arguments per thread in `start`, the return emits the record with the result.
 *  - the syscall exit tracepoints syscalls:sys_exit_{open,openat,openat2,creat}: the arguments are
 *    read at exit from the registers the task saved when it entered the syscall
 *    (bpf_task_pt_regs, Linux >= 5.15), so one program per open and no map round trip.
 *  - the same tracepoints paired with sys_enter_* through `start`, for kernels without
 *    bpf_task_pt_regs.
 *  - benchmarks only: the raw sys_exit tracepoint, one program for every syscall's exit.
 *
 * Record kinds (fileopen.h): a full record carries the open's arguments and path; a compact one
 * only whose open it was and its result, which is all that counting needs. Compact records need
 * no arguments, so the exit alone makes them: no register reads, no path copy, no entry probe,
 * no map round trip. The loader asks for full records (`record_paths`) for `splitscope trace` and
 * the --path-prefix filter; otherwise only the start-up self-test's own opens get full records,
 * because it recognises them by their paths, and the entry points are detached once it passed.
 *
 * Compact records are batched per CPU (struct open_batch in fileopen.h): an open writes its head
 * into its CPU's batch, and only every OPEN_BATCH_LEN-th open puts the batch into the ring. User
 * space reads batches that are not full yet where they are (the map is mmap-able), so a quiet
 * CPU's opens are counted without waiting for the batch to fill. The ring's reserve and commit
 * were about half of a compact record's cost; batched they are paid once per OPEN_BATCH_LEN opens.
 *
 * Records are submitted without waking the reader; a wakeup is forced only when the unread data
 * crosses a multiple of `wakeup_bytes`, and user space also drains on a short timer. A wakeup per
 * record costs about 3.6 us per open on the machines this was measured on, batching about 0.9 us.
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "fileopen.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define NR_open 2
#define NR_creat 85
#define NR_openat 257
#define NR_openat2 437

#define O_WRONLY 01
#define O_CREAT 0100
#define O_TRUNC 01000

#define PREFIX_MAX OPEN_EVENT_FNAME_LEN

/*
 * Load-time configuration. `const volatile` globals live in .rodata, which the loader rewrites
 * before loading and then freezes: the verifier sees constants and prunes disabled filters.
 * All zero = trace everything in compact records, a wakeup per record.
 */
const volatile __u32 targ_tgid = 0;         /* only this process */
const volatile __u32 targ_cgroup_set = 0;   /* only the cgroup v2 in `targ_cgroup` and below */
const volatile __u32 targ_comm_set = 0;
const volatile __u64 targ_comm[2] = {};     /* only this comm: 16 bytes, NUL padded */
const volatile __u32 targ_prefix_len = 0;
const volatile char targ_prefix[PREFIX_MAX] = {}; /* only paths starting with this */
const volatile __u32 targ_failed_only = 0;
const volatile __u64 wakeup_bytes = 0; /* force a wakeup when unread data crosses a multiple */
const volatile __u32 record_paths = 0; /* every record full (with its path), not compact */
const volatile __u32 task_fields = 0;  /* comm and cgroup id read from the task's BTF (Linux >= 5.11) */

/*
 * Benchmarks only (`cargo xtask bench-probe` measures where the cost of an open goes): stop the
 * saved-registers tracepoint program early. The verifier prunes whatever is not chosen.
 */
#define COST_NORMAL 0
#define COST_RETURN 1          /* return at once: the tracepoint and an empty program */
#define COST_PERCPU_COUNT 2    /* bump a per-CPU counter, as bpftrace's count() does */
#define COST_CONSTANT_RECORD 3 /* reserve and submit a compact record of constants */
#define COST_FULL_NO_PATH 4    /* a full record without copying the path */
#define COST_UNBATCHED 5       /* a compact record per open, reserved and submitted in the ring */
#define COST_BATCH_UNSENT 6    /* records into the CPU's batch, the batch never into the ring */
const volatile __u32 cost_variant = COST_NORMAL;

/* Puts both record kinds into the object's BTF (records are reserved as void *), so a test can
 * check the Rust mirror against what clang laid out. Lives in .rodata beside the filters. */
struct open_head *const volatile open_head_layout = 0;
struct open_full *const volatile open_full_layout = 0;
struct open_batch *const volatile open_batch_layout = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024); /* the loader sets the real size */
} events SEC(".maps");

/* The per-CPU batches of compact records, one entry per possible CPU (the loader sets how many),
 * mmap-able so that user space reads a batch that is not full yet without a system call. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct open_batch);
} batches SEC(".maps");

/* The --cgroup filter's cgroup v2 directory (the loader puts an fd of it at index 0). Matched
 * with bpf_current_task_under_cgroup(), which compares cgroups themselves: an id and a depth
 * counted from the cgroup v2 root would be wrong wherever the agent sees the tree through a
 * cgroup namespace (a kind node, a container), whose root is not the kernel's. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} targ_cgroup SEC(".maps");

/* Records lost: [0] ring buffer full, [1] no room to keep an open's arguments until its exit. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* COST_PERCPU_COUNT's counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cost_count SEC(".maps");

/*
 * The loader while it runs its start-up self-test: its opens bypass the filters and get full
 * records. It is named by its tgid inside its own pid namespace (dev + inode of
 * /proc/self/ns/pid), because the agent runs in a pod without hostPID: the kernel-wide tgid of
 * bpf_get_current_pid_tgid() is not the pid the process knows itself by. tgid 0 = no self-test
 * running.
 */
struct selftest_task {
	__u32 tgid;
	__u32 pad;
	__u64 pidns_dev;
	__u64 pidns_ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct selftest_task);
} selftest SEC(".maps");

/* An open's arguments between entry and exit, per thread. */
struct open_args {
	__u64 fname;
	__u32 flags;
	__u32 mode;
	__u32 syscall;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);
	__type(value, struct open_args);
} start SEC(".maps");

static __always_inline void count_drop(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&drops, &slot);
	if (n)
		*n += 1;
}

/* The current task belongs to the loader running its self-test. When none runs this is one
 * (inlined) array lookup and a compare. */
static __always_inline bool is_selftest(void)
{
	__u32 zero = 0;
	struct selftest_task *t = bpf_map_lookup_elem(&selftest, &zero);
	struct bpf_pidns_info ns = {};

	if (!t || !t->tgid)
		return false;
	/* Fails (non-zero) when the current task is not in that pid namespace. */
	if (bpf_get_ns_current_pid_tgid(t->pidns_dev, t->pidns_ino, &ns, sizeof(ns)))
		return false;
	return ns.tgid == t->tgid;
}

/* Whether this open gets a full record (and so needs its arguments). */
static __always_inline bool wants_path(void)
{
	return record_paths || targ_prefix_len || is_selftest();
}

/* The filters that depend only on the task, checked before any other work. */
static __always_inline bool task_passes(__u32 tgid)
{
	if (targ_tgid && targ_tgid != tgid)
		return false;
	if (targ_cgroup_set && bpf_current_task_under_cgroup(&targ_cgroup, 0) != 1)
		return false;
	if (targ_comm_set) {
		__u64 comm[2] = {};
		bpf_get_current_comm(comm, sizeof(comm));
		if (comm[0] != targ_comm[0] || comm[1] != targ_comm[1])
			return false;
	}
	return true;
}

static __always_inline bool task_wanted(__u32 tgid)
{
	return task_passes(tgid) || is_selftest();
}

/* The result filter; the self-test's opens pass it whatever they return. */
static __always_inline bool result_wanted(long ret)
{
	return !(targ_failed_only && ret >= 0 && !is_selftest());
}

static __always_inline bool prefix_matches(const char *fname)
{
	for (__u32 i = 0; i < PREFIX_MAX; i++) {
		if (i >= targ_prefix_len)
			return true;
		if (fname[i] != targ_prefix[i])
			return false;
	}
	return true;
}

static __always_inline __u32 syscall_of(long nr)
{
	switch (nr) {
	case NR_open:
		return OPEN_SYSCALL_OPEN;
	case NR_openat:
		return OPEN_SYSCALL_OPENAT;
	case NR_openat2:
		return OPEN_SYSCALL_OPENAT2;
	case NR_creat:
		return OPEN_SYSCALL_CREAT;
	default:
		return OPEN_SYSCALL_UNKNOWN;
	}
}

/* The flags for a record of `size` bytes that wake the reader only where the unread data crosses
 * a multiple of wakeup_bytes; `uncounted` of its bytes are not in the ring's unread data yet (a
 * reserved record's are, one written by bpf_ringbuf_output is not). Without a threshold: the
 * kernel's default, a wakeup when the reader waits. */
static __always_inline __u64 wake_flags(__u64 uncounted, __u64 size)
{
	if (!wakeup_bytes)
		return 0;
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + uncounted;
	/*
	 * Wake the reader each time the unread data crosses a multiple of wakeup_bytes (a power of
	 * two). Producers on several CPUs race between reserve and query and can all step over one
	 * crossing, so there are several per ring (wakeup_bytes = ring / 8): a missed one is followed
	 * by the next long before the ring is full.
	 */
	__u64 step = ~(wakeup_bytes - 1);
	return (avail >= wakeup_bytes && (avail & step) != ((avail - size) & step)) ? BPF_RB_FORCE_WAKEUP
										 : BPF_RB_NO_WAKEUP;
}

/* Submits a reserved record of `size` bytes. */
static __always_inline void submit(void *record, __u64 size)
{
	bpf_ringbuf_submit(record, wake_flags(0, size));
}

/* The task that opened: its ids, and with task_fields the task itself, which its comm and cgroup
 * are read from (one helper call for all of them). */
struct opener {
	struct task_struct *task;
	__u64 pid_tgid;
};

static __always_inline struct opener current_opener(void)
{
	struct opener o = {};
	if (task_fields) {
		o.task = bpf_get_current_task_btf();
		o.pid_tgid = (__u64)o.task->tgid << 32 | (__u32)o.task->pid;
	} else {
		o.pid_tgid = bpf_get_current_pid_tgid();
	}
	return o;
}

static __always_inline void fill_head(struct open_head *h, struct opener who, long ret, __u32 syscall)
{
	if (task_fields) {
		h->cgroup_id = who.task->cgroups->dfl_cgrp->kn->id;
		__builtin_memcpy(h->comm, who.task->comm, sizeof(h->comm));
	} else {
		h->cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(h->comm, sizeof(h->comm));
	}
	h->ret = ret;
	h->tgid_syscall = (__u32)(who.pid_tgid >> 32) | syscall << OPEN_HEAD_SYSCALL_SHIFT;
}

/* A compact record of its own in the ring (benchmarks: what batching saves). */
static __always_inline void emit_unbatched(struct opener who, long ret, __u32 syscall)
{
	struct open_head *h = bpf_ringbuf_reserve(&events, sizeof(*h), 0);
	if (!h) {
		count_drop(0);
		return;
	}
	fill_head(h, who, ret, syscall);
	submit(h, sizeof(*h));
}

/* Keeps the compiler from moving stores across it: the batch's stores must reach memory in the
 * order fileopen.h promises readers (the JIT and x86 keep the order the program has). */
#define store_barrier() asm volatile("" ::: "memory")

/* A compact record, into this CPU's batch. The task and result filters have passed. No other
 * run of the probe interleaves with this one on its CPU, so the CPU's batch has one writer at a
 * time: kprobe and tracepoint programs run with preemption disabled and are not nested; a fexit
 * program may be preempted (on kernels that preempt kernel code), but keeps its CPU, and the
 * kernel skips it for other opens on that CPU meanwhile and counts the skips (user space adds
 * them to the drops). */
static __always_inline void emit_compact(struct opener who, long ret, __u32 syscall)
{
	if (cost_variant == COST_UNBATCHED && !is_selftest()) {
		emit_unbatched(who, ret, syscall);
		return;
	}
	__u32 cpu = bpf_get_smp_processor_id();
	struct open_batch *b = bpf_map_lookup_elem(&batches, &cpu);
	if (!b) {
		count_drop(0); /* a CPU beyond the possible ones: cannot happen */
		return;
	}
	__u64 seq = b->seq;
	fill_head(&b->rec[seq & (OPEN_BATCH_LEN - 1)], who, ret, syscall);
	seq += 1;
	store_barrier();
	*(volatile __u64 *)&b->seq = seq;
	if (seq & (OPEN_BATCH_LEN - 1))
		return;
	if (cost_variant == COST_BATCH_UNSENT && !is_selftest())
		return;
	b->cpu = cpu;
	/* A batch the ring has no room for is counted by user space, which knows which of its
	 * records it read in place before the batch was full. */
	bpf_ringbuf_output(&events, b, sizeof(*b), wake_flags(sizeof(*b), sizeof(*b)));
}

/* A full record. The task and result filters have passed; the path filter is applied here. */
static __always_inline void emit_full(struct opener who, long ret, const char *fname, __u32 flags, __u32 mode,
				      __u32 syscall)
{
	struct open_full *e;
	long n;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(0);
		return;
	}
	fill_head(&e->head, who, ret, syscall);
	e->detail.tid = (__u32)who.pid_tgid;
	e->detail.ts_ns = bpf_ktime_get_ns();
	e->detail.uid = (__u32)bpf_get_current_uid_gid();
	e->detail.flags = flags;
	e->detail.mode = mode;
	e->detail.eflags = 0;
	__builtin_memset(e->detail.pad, 0, sizeof(e->detail.pad));
	if (cost_variant == COST_FULL_NO_PATH && !is_selftest()) {
		e->detail.fname[0] = 0;
		e->detail.fname_len = 0;
		submit(e, sizeof(*e));
		return;
	}
	n = bpf_probe_read_user_str(e->detail.fname, sizeof(e->detail.fname), fname);
	if (n <= 0) {
		e->detail.fname[0] = 0;
		e->detail.fname_len = 0;
		e->detail.eflags = OPEN_EVENT_F_FNAME_FAULT;
	} else {
		e->detail.fname_len = n - 1;
		if (n == sizeof(e->detail.fname))
			e->detail.eflags = OPEN_EVENT_F_FNAME_TRUNCATED;
	}
	if (targ_prefix_len && (n <= 0 || !prefix_matches(e->detail.fname)) && !is_selftest()) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return;
	}
	submit(e, sizeof(*e));
}

/* The benchmark variants that end before a normal record is made. The self-test's own opens
 * never take them: it must still see its records for the probe to load. */
static __always_inline bool cost_variant_stops(void)
{
	return cost_variant != COST_NORMAL && cost_variant != COST_FULL_NO_PATH && cost_variant != COST_UNBATCHED &&
	       cost_variant != COST_BATCH_UNSENT && !is_selftest();
}

static __always_inline void cost_variant_finish(long ret)
{
	if (cost_variant == COST_PERCPU_COUNT) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&cost_count, &zero);
		if (n)
			*n += 1;
	} else if (cost_variant == COST_CONSTANT_RECORD) {
		struct open_head *h = bpf_ringbuf_reserve(&events, sizeof(*h), 0);
		if (!h) {
			count_drop(0);
			return;
		}
		__builtin_memset(h, 0, sizeof(*h));
		h->ret = ret;
		submit(h, sizeof(*h));
	}
}

/* ---- syscall exits: the raw sys_exit tracepoint, or the syscalls:sys_exit_* ones ---- */

/* Makes the record of an open at its syscall's exit. With `have_regs` (a constant), `regs` are
 * the task's saved user registers, which hold the open's arguments; without, they are read from
 * the task for a full record (bpf_task_pt_regs, Linux >= 5.15), a call the compiler leaves out of
 * a program that has them. */
static __always_inline int on_open_exit(long nr, long ret, struct pt_regs *regs, const bool have_regs)
{
	bool cost_stop = cost_variant_stops();
	if (cost_stop && cost_variant == COST_RETURN)
		return 0;

	struct opener who = current_opener();
	if (!task_wanted(who.pid_tgid >> 32))
		return 0;

	if (cost_stop) {
		cost_variant_finish(ret);
		return 0;
	}
	__u32 syscall = syscall_of(nr);
	if (syscall == OPEN_SYSCALL_UNKNOWN || !result_wanted(ret))
		return 0;
	if (!wants_path() && cost_variant != COST_FULL_NO_PATH) {
		emit_compact(who, ret, syscall);
		return 0;
	}

	if (!have_regs)
		regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	const char *fname;
	__u32 flags, mode;

	switch (nr) {
	case NR_openat:
		fname = (const char *)regs->si;
		flags = regs->dx;
		mode = regs->r10;
		break;
	case NR_open:
		fname = (const char *)regs->di;
		flags = regs->si;
		mode = regs->dx;
		break;
	case NR_openat2: {
		struct open_how how = {};
		fname = (const char *)regs->si;
		bpf_probe_read_user(&how, sizeof(how), (void *)regs->dx);
		flags = how.flags;
		mode = how.mode;
		break;
	}
	default: /* NR_creat */
		fname = (const char *)regs->di;
		flags = O_CREAT | O_WRONLY | O_TRUNC;
		mode = regs->si;
		break;
	}
	emit_full(who, ret, fname, flags, mode, syscall);
	return 0;
}

/* x86-64's thread_info.status bit for a 32-bit (ia32) syscall, whose numbers are not these. */
#define TS_COMPAT 0x0002

/*
 * The raw tracepoint every syscall's exit passes (raw_syscalls:sys_exit, BTF-typed), loaded only
 * when asked for (a benchmarking aid, see the loader's attach plan). The kernel calls it with the
 * registers and the result, without the perf record the syscalls:sys_exit_* tracepoints build
 * for their programs, so an open costs less; but it runs at every syscall's exit and returns
 * after one load and four compares for all but the opens, which costs every other syscall more.
 * 32-bit syscalls (ia32 by TS_COMPAT, x32 by bit 30 of the number) are left out, as the
 * syscalls:sys_exit_* tracepoints leave them out. bpf_get_current_task_btf: Linux >= 5.11.
 */
SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit_raw, struct pt_regs *regs, long ret)
{
	long nr = regs->orig_ax;
	if (nr != NR_openat && nr != NR_open && nr != NR_openat2 && nr != NR_creat)
		return 0;
	if (bpf_get_current_task_btf()->thread_info.status & TS_COMPAT)
		return 0;
	return on_open_exit(nr, ret, regs, true);
}

/* syscalls:sys_exit_{open,openat,openat2,creat}, arguments from the task's saved registers
 * (bpf_task_pt_regs, Linux >= 5.15). */
SEC("tracepoint")
int sys_exit_open_regs(struct syscall_trace_exit *ctx)
{
	return on_open_exit(ctx->nr, ctx->ret, NULL, false);
}

/* ---- syscall enter + exit tracepoints, paired through `start` ---- */

/* Whether an open's entry must keep its arguments: only opens that get full records need them. */
static __always_inline bool wants_args(__u64 pid_tgid)
{
	return task_wanted(pid_tgid >> 32) && wants_path();
}

static __always_inline void keep_args(__u64 pid_tgid, __u64 fname, __u32 flags, __u32 mode, __u32 syscall)
{
	struct open_args args = {.fname = fname, .flags = flags, .mode = mode, .syscall = syscall};
	if (bpf_map_update_elem(&start, &pid_tgid, &args, BPF_ANY))
		count_drop(1);
}

/* One program per syscall: a tracepoint program may read no further into its record than the
 * shortest record it is attached to, and sys_enter_open's has three arguments. */
SEC("tracepoint")
int sys_enter_open_args(struct syscall_trace_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (wants_args(pid_tgid))
		keep_args(pid_tgid, ctx->args[0], ctx->args[1], ctx->args[2], OPEN_SYSCALL_OPEN);
	return 0;
}

SEC("tracepoint")
int sys_enter_openat_args(struct syscall_trace_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (wants_args(pid_tgid))
		keep_args(pid_tgid, ctx->args[1], ctx->args[2], ctx->args[3], OPEN_SYSCALL_OPENAT);
	return 0;
}

SEC("tracepoint")
int sys_enter_openat2_args(struct syscall_trace_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (wants_args(pid_tgid)) {
		struct open_how how = {};
		bpf_probe_read_user(&how, sizeof(how), (void *)ctx->args[2]);
		keep_args(pid_tgid, ctx->args[1], how.flags, how.mode, OPEN_SYSCALL_OPENAT2);
	}
	return 0;
}

SEC("tracepoint")
int sys_enter_creat_args(struct syscall_trace_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (wants_args(pid_tgid))
		keep_args(pid_tgid, ctx->args[0], O_CREAT | O_WRONLY | O_TRUNC, ctx->args[1], OPEN_SYSCALL_CREAT);
	return 0;
}

/* Emits the record of an open at its exit: compact from the exit alone, or full from the
 * arguments its entry kept. `syscall` is used for compact records (kprobes cannot tell). */
static __always_inline void emit_at_exit(long ret, __u32 syscall)
{
	struct opener who = current_opener();
	if (!wants_path()) {
		if (task_wanted(who.pid_tgid >> 32) && result_wanted(ret))
			emit_compact(who, ret, syscall);
		return;
	}
	struct open_args *args = bpf_map_lookup_elem(&start, &who.pid_tgid);
	if (!args)
		return; /* filtered at entry, or the open began before the probe was attached */
	struct open_args a = *args;
	bpf_map_delete_elem(&start, &who.pid_tgid);
	if (result_wanted(ret))
		emit_full(who, ret, (const char *)a.fname, a.flags, a.mode, a.syscall);
}

SEC("tracepoint")
int sys_exit_open_paired(struct syscall_trace_exit *ctx)
{
	__u32 syscall = syscall_of(ctx->nr);
	if (syscall != OPEN_SYSCALL_UNKNOWN)
		emit_at_exit(ctx->ret, syscall);
	return 0;
}

/* ---- fexit on the kernel's open path ---- */

/*
 * long do_sys_openat2(int dfd, const char __user *filename, struct open_how *how), at its return:
 * every open(2), openat(2), openat2(2) and creat(2) of Linux >= 5.6 passes through it. `how` is
 * the kernel's copy, read only for full records. Which syscall it was is not known here (as with
 * the kretprobe).
 */
#ifndef SPLITSCOPE_WITHOUT_FEXIT /* `cargo xtask build-ebpf`'s check on kernels that refuse fexit */
/* Loaded first and alone, as libbpf-tools' fentry_can_attach() does: a kernel that refuses
 * fentry programs (EPERM) says so at once for this one, instead of after verifying the real
 * one, which aya then verifies again and again to log why. */
SEC("fexit/do_sys_openat2")
int BPF_PROG(fexit_can_attach)
{
	return 0;
}

SEC("fexit/do_sys_openat2")
int BPF_PROG(fexit_do_sys_openat2, int dfd, const char *filename, struct open_how *how, long ret)
{
	struct opener who = current_opener();
	if (!task_wanted(who.pid_tgid >> 32) || !result_wanted(ret))
		return 0;
	if (!wants_path()) {
		emit_compact(who, ret, OPEN_SYSCALL_UNKNOWN);
		return 0;
	}
	emit_full(who, ret, filename, BPF_CORE_READ(how, flags), BPF_CORE_READ(how, mode), OPEN_SYSCALL_UNKNOWN);
	return 0;
}
#endif

/* ---- kprobe + kretprobe on the kernel's open path ---- */

/* long do_sys_open(int dfd, const char __user *filename, int flags, umode_t mode) */
SEC("kprobe")
int BPF_KPROBE(kprobe_do_sys_open, int dfd, const char *filename, int flags, unsigned short mode)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (wants_args(pid_tgid))
		keep_args(pid_tgid, (__u64)filename, flags, mode, OPEN_SYSCALL_UNKNOWN);
	return 0;
}

/* long do_sys_openat2(int dfd, const char __user *filename, struct open_how *how) */
SEC("kprobe")
int BPF_KPROBE(kprobe_do_sys_openat2, int dfd, const char *filename, struct open_how *how)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (wants_args(pid_tgid))
		keep_args(pid_tgid, (__u64)filename, BPF_CORE_READ(how, flags), BPF_CORE_READ(how, mode),
			  OPEN_SYSCALL_UNKNOWN);
	return 0;
}

SEC("kretprobe")
int BPF_KRETPROBE(kretprobe_open, long ret)
{
	emit_at_exit(ret, OPEN_SYSCALL_UNKNOWN);
	return 0;
}
