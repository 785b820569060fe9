//! Test-only code, compiled only for tests: fixtures, the mock API server, a Prometheus
//! stand-in, the lifecycle scenarios and their tests, the RBAC coverage check, and the
//! structural-schema checker.

pub mod fixtures;
pub mod lifecycle;
pub mod mock_api;
pub mod prometheus_stand_in;
pub mod rbac_coverage;
pub mod rollout_scenarios;
pub mod scenarios;
pub mod schema_check;
pub mod validation_table;
