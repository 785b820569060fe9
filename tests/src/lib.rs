//! Shared pieces of the workspace-level tests.

pub mod dashboards;
pub mod fake_api_server;
pub mod http;
pub mod opens_exporter;
pub mod process_group;
pub mod prometheus;
pub mod served;
