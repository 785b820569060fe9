//! Tier 3: the probe and the agent on this machine's real kernel. Needs root (or CAP_BPF +
//! CAP_PERFMON) and kernel BTF; without them every test here fails, naming what is missing.
//!
//! Each test drives a child process with a command name no other process has
//! (`splitscope-test-opener`), so exact counts hold on a busy machine.

mod support;

mod agent_process;
mod attribution;
mod cgroup_namespace;
mod dashboards;
mod filters;
mod overload;
mod rollout_signal;
mod stream;
