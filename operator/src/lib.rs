//! Splitscope: a TrafficSplit operator (`controller`) and an eBPF file-open tracing agent
//! (`agent`, `trace`), shipped as one binary.

pub mod agent;
pub mod cli;
pub mod controller;
pub mod metrics_server;
pub mod rbac;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
