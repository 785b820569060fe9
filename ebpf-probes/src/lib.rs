//! `splitscope-probes`: the BPF file-open probe (C in `src/bpf/`, compiled by build.rs) and its
//! aya loader.
//!
//! Data flows one way: [`Probe::load`] (preflight → attach [`plan`] → self-test) →
//! [`EventStream`] (ring buffer → [`OpenEvent::decode`]) → the caller.

pub mod batch;
pub mod errno;
pub mod event;
pub mod facts;
pub mod filters;
pub mod kretprobe_missed;
pub mod loader;
pub mod open_flags;
pub mod plan;
pub mod preflight;
pub mod raw_open;
pub mod recursion_missed;
pub mod stream;

pub use event::{OpenEvent, OpenEventRef, OpenRecord, OpenResult, RecordKind, Syscall};
pub use filters::Filters;
pub use loader::{AttachInfo, CostVariant, Probe, ProbeConfig, ProbeError, TaskFields, TracepointArgs};
pub use plan::{AttachMode, Tracepoints};
pub use stream::{EventStream, StreamError};
