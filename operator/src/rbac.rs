//! The Kubernetes permissions each program needs, declared once.
//!
//! `deploy/rbac` must grant exactly these (a test renders the manifests and compares), and the
//! controller's mock-API tests check that every request the reconciler sends is covered by them,
//! so the role and the code cannot drift apart silently.

/// One RBAC rule: these verbs on these resources of one API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// API group; `""` is the core group.
    pub api_group: &'static str,
    /// Resources, with subresources written `resource/subresource`.
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

impl Rule {
    /// Whether this rule grants `verb` on `resource` (`resource/subresource` for subresources).
    pub fn grants(&self, api_group: &str, resource: &str, verb: &str) -> bool {
        self.api_group == api_group && self.resources.contains(&resource) && self.verbs.contains(&verb)
    }
}

/// Whether any of `rules` grants `verb` on `resource` in `api_group`.
pub fn granted(rules: &[Rule], api_group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| r.grants(api_group, resource, verb))
}

// Server-side apply that creates an object is authorized as `create` as well as `patch`
// (kube-apiserver's patch handler), so every applied kind needs both.

/// Cluster-wide permissions of the controller (a ClusterRole). Exactly what the code uses:
/// `controller::testing::rbac_coverage` fails on a request these do not grant and on a verb no request
/// uses.
pub const CONTROLLER_CLUSTER_RULES: &[Rule] = &[
    // list/watch: the Controller's stream; get: a fresh read before a teardown (the cached
    // copy of a deleted object may be stale); patch: adding/removing the finalizer.
    Rule {
        api_group: "splitscope.dev",
        resources: &["trafficsplits"],
        verbs: &["get", "list", "watch", "patch"],
    },
    Rule {
        api_group: "splitscope.dev",
        resources: &["trafficsplits/status"],
        verbs: &["patch"],
    },
    // Owner references with blockOwnerDeletion need update on the owner's finalizers
    // (OwnerReferencesPermissionEnforcement admission).
    Rule {
        api_group: "splitscope.dev",
        resources: &["trafficsplits/finalizers"],
        verbs: &["update"],
    },
    Rule {
        api_group: "",
        resources: &["services"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    // The slice cache behind status.backends[].readyEndpoints (list/watch only).
    Rule {
        api_group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: &["list", "watch"],
    },
    Rule {
        api_group: "gateway.networking.k8s.io",
        resources: &["httproutes"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    Rule {
        api_group: "networking.istio.io",
        resources: &["destinationrules", "virtualservices"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    Rule {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
    },
];

/// Permissions of the controller in its own namespace (a Role): the leader-election Lease
/// (kube-lease-manager reads it, creates it when missing, and patches it to take, renew and
/// release it).
pub const CONTROLLER_NAMESPACE_RULES: &[Rule] = &[Rule {
    api_group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["get", "create", "patch"],
}];

/// Cluster-wide permissions of the node agent: list and watch the Pods on its node for
/// attribution (its reflector never reads one Pod by name). Exactly what the code uses:
/// `controller::testing::rbac_coverage` runs the agent's Pod watcher against a mock API.
pub const AGENT_CLUSTER_RULES: &[Rule] = &[Rule {
    api_group: "",
    resources: &["pods"],
    verbs: &["list", "watch"],
}];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_only_what_is_listed() {
        assert!(granted(CONTROLLER_CLUSTER_RULES, "", "services", "patch"));
        assert!(!granted(CONTROLLER_CLUSTER_RULES, "", "services", "update"));
        assert!(!granted(CONTROLLER_CLUSTER_RULES, "apps", "services", "patch"));
        assert!(granted(
            CONTROLLER_CLUSTER_RULES,
            "splitscope.dev",
            "trafficsplits/status",
            "patch"
        ));
        assert!(!granted(
            CONTROLLER_CLUSTER_RULES,
            "splitscope.dev",
            "trafficsplits",
            "delete"
        ));
    }

    #[test]
    fn no_wildcards() {
        let all = CONTROLLER_CLUSTER_RULES
            .iter()
            .chain(CONTROLLER_NAMESPACE_RULES)
            .chain(AGENT_CLUSTER_RULES);
        for rule in all {
            assert!(
                !rule.resources.contains(&"*") && !rule.verbs.contains(&"*"),
                "{rule:?}"
            );
            assert_ne!(rule.api_group, "*", "{rule:?}");
        }
    }
}
