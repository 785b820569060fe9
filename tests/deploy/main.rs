//! Checks of everything under `deploy/` and `examples/`, as a user would apply it.
//!
//! Every kustomization is rendered with `kubectl kustomize` (kubectl must be installed: these
//! tests fail, they do not skip, without it), every rendered object is parsed strictly into its
//! Kubernetes type, and the result is checked against the contracts the code defines: the RBAC
//! rules of `splitscope::rbac`, the flags and env vars of `splitscope::cli`, the metric names and
//! types of the binaries' own registries, the TrafficSplit API.

mod cluster_config;
mod dashboards;
mod examples;
mod kustomize;
mod rbac;
mod security;
mod strict;
