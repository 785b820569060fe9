//! The RBAC of deploy/default grants exactly what `splitscope::rbac` lists — nothing missing,
//! nothing extra — to exactly the ServiceAccounts the workloads run as. Together with the
//! controller's check that every request it sends is in `splitscope::rbac`, a new verb in the
//! code fails CI until the role grants it.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::Value;
use splitscope::rbac::{AGENT_CLUSTER_RULES, CONTROLLER_CLUSTER_RULES, CONTROLLER_NAMESPACE_RULES, Rule};

use crate::kustomize::{KUSTOMIZATIONS, Rendered, render};

const NAMESPACE: &str = "splitscope-system";
const CONTROLLER_SA: &str = "splitscope-controller";
const AGENT_SA: &str = "splitscope-agent";

/// (api group, resource, verb): the unit of permission both sides are compared in.
type Grant = (String, String, String);

fn expected(rules: &[Rule]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for resource in rule.resources {
            for verb in rule.verbs {
                out.insert((rule.api_group.into(), (*resource).into(), (*verb).into()));
            }
        }
    }
    out
}

/// Expands manifest rules; fails on anything a triple cannot express (resourceNames would
/// narrow, nonResourceURLs would add), and on wildcards.
fn granted(rules: &[PolicyRule]) -> Result<BTreeSet<Grant>, String> {
    let mut out = BTreeSet::new();
    for rule in rules {
        if rule.resource_names.as_ref().is_some_and(|n| !n.is_empty()) {
            return Err(format!("rule with resourceNames: {rule:?}"));
        }
        if rule.non_resource_urls.as_ref().is_some_and(|n| !n.is_empty()) {
            return Err(format!("rule with nonResourceURLs: {rule:?}"));
        }
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        if groups.is_empty() || resources.is_empty() || rule.verbs.is_empty() {
            return Err(format!("rule that grants nothing: {rule:?}"));
        }
        for group in &groups {
            for resource in &resources {
                for verb in &rule.verbs {
                    if [group, resource, verb].iter().any(|s| s.contains('*')) {
                        return Err(format!("wildcard in {rule:?}"));
                    }
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// Differences between what a role grants and what the code declares, each named.
fn compare(role: &str, granted: &BTreeSet<Grant>, expected: &BTreeSet<Grant>) -> Vec<String> {
    let show = |(g, r, v): &Grant| format!("{v} {r} (group {g:?})");
    let mut out: Vec<String> = expected
        .difference(granted)
        .map(|g| format!("{role} is missing {}", show(g)))
        .collect();
    out.extend(
        granted
            .difference(expected)
            .map(|g| format!("{role} grants more than operator/src/rbac.rs: {}", show(g))),
    );
    out
}

fn parse<T: serde::de::DeserializeOwned>(value: &Value) -> T {
    serde_json::from_value(value.clone()).unwrap()
}

fn cluster_role(default: &Rendered, name: &str) -> BTreeSet<Grant> {
    let role: ClusterRole = parse(default.find("ClusterRole", name));
    assert!(
        role.aggregation_rule.is_none(),
        "{name} must not aggregate other roles"
    );
    granted(role.rules.as_deref().unwrap_or_default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn controller_cluster_role_is_exactly_the_declared_rules() {
    let default = render("deploy/default");
    let problems = compare(
        "ClusterRole splitscope-controller",
        &cluster_role(&default, "splitscope-controller"),
        &expected(CONTROLLER_CLUSTER_RULES),
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn controller_namespace_role_is_exactly_the_declared_rules() {
    let default = render("deploy/default");
    let value = default.find("Role", "splitscope-controller-leader-election");
    assert_eq!(value["metadata"]["namespace"], NAMESPACE);
    let role: Role = parse(value);
    let grants = granted(role.rules.as_deref().unwrap_or_default()).unwrap();
    let problems = compare(
        "Role splitscope-controller-leader-election",
        &grants,
        &expected(CONTROLLER_NAMESPACE_RULES),
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn agent_cluster_role_is_exactly_the_declared_rules() {
    let default = render("deploy/default");
    let problems = compare(
        "ClusterRole splitscope-agent",
        &cluster_role(&default, "splitscope-agent"),
        &expected(AGENT_CLUSTER_RULES),
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

/// No other role, and each role bound to its own ServiceAccount only, which the workload uses.
#[test]
fn roles_are_bound_to_the_workloads_service_accounts_only() {
    let default = render("deploy/default");
    let names = |kind: &str| -> BTreeSet<String> {
        default
            .of_kind(kind)
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names("ClusterRole"),
        BTreeSet::from(["splitscope-controller".into(), "splitscope-agent".into()])
    );
    assert_eq!(
        names("Role"),
        BTreeSet::from(["splitscope-controller-leader-election".into()])
    );

    let sa = |name: &str| vec![("ServiceAccount".to_owned(), name.to_owned(), NAMESPACE.to_owned())];
    let subjects = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects
            .iter()
            .flatten()
            .map(|s| {
                (
                    s.kind.clone(),
                    s.name.clone(),
                    s.namespace.clone().unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>()
    };
    let cluster_bindings: Vec<ClusterRoleBinding> =
        default.of_kind("ClusterRoleBinding").map(parse).collect();
    assert_eq!(
        cluster_bindings.len(),
        2,
        "one ClusterRoleBinding per ClusterRole"
    );
    for binding in &cluster_bindings {
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        let who = match binding.role_ref.name.as_str() {
            "splitscope-controller" => CONTROLLER_SA,
            "splitscope-agent" => AGENT_SA,
            other => panic!("binding to unexpected ClusterRole {other}"),
        };
        assert_eq!(subjects(&binding.subjects), sa(who), "{binding:?}");
    }
    let bindings: Vec<RoleBinding> = default.of_kind("RoleBinding").map(parse).collect();
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].role_ref.kind, "Role");
    assert_eq!(bindings[0].role_ref.name, "splitscope-controller-leader-election");
    assert_eq!(bindings[0].metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(subjects(&bindings[0].subjects), sa(CONTROLLER_SA));

    let service_account = |kind: &str, name: &str| {
        default.find(kind, name)["spec"]["template"]["spec"]["serviceAccountName"].clone()
    };
    assert_eq!(
        service_account("Deployment", "splitscope-controller"),
        CONTROLLER_SA
    );
    assert_eq!(service_account("DaemonSet", "splitscope-agent"), AGENT_SA);
}

/// The resource the roles name is the one the installed CRD serves.
#[test]
fn rbac_names_the_crd_plural() {
    let crds = render("deploy/crds");
    let crd = crds.find("CustomResourceDefinition", "trafficsplits.splitscope.dev");
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap();
    let group = crd["spec"]["group"].as_str().unwrap();
    for rule in CONTROLLER_CLUSTER_RULES.iter().filter(|r| r.api_group == group) {
        for resource in rule.resources {
            assert_eq!(resource.split('/').next(), Some(plural), "{rule:?}");
        }
    }
}

/// No role anywhere under deploy/ (the monitoring stack's included) uses a wildcard.
#[test]
fn no_wildcards_in_any_role() {
    for dir in KUSTOMIZATIONS {
        let rendered = render(dir);
        for value in rendered.of_kind("ClusterRole").chain(rendered.of_kind("Role")) {
            let rules: Vec<PolicyRule> = serde_json::from_value(value["rules"].clone()).unwrap_or_default();
            if let Err(e) = granted(&rules) {
                panic!("{dir}: {} {}: {e}", value["kind"], value["metadata"]["name"]);
            }
        }
        for value in rendered
            .of_kind("ClusterRoleBinding")
            .chain(rendered.of_kind("RoleBinding"))
        {
            assert_ne!(
                value["roleRef"]["name"], "cluster-admin",
                "{dir}: binding to cluster-admin"
            );
        }
    }
}

#[test]
fn comparison_names_missing_and_extra_grants() {
    let declared = expected(&[Rule {
        api_group: "",
        resources: &["pods"],
        verbs: &["get", "list", "watch"],
    }]);
    let manifest: Vec<PolicyRule> = serde_json::from_value(serde_json::json!([
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]}
    ]))
    .unwrap();
    let problems = compare("r", &granted(&manifest).unwrap(), &declared);
    assert_eq!(
        problems,
        vec![
            "r is missing watch pods (group \"\")".to_owned(),
            "r grants more than operator/src/rbac.rs: delete pods (group \"\")".to_owned(),
        ]
    );
    let wildcard: Vec<PolicyRule> = serde_json::from_value(serde_json::json!([
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}
    ]))
    .unwrap();
    assert!(granted(&wildcard).unwrap_err().contains("wildcard"));
    let named: Vec<PolicyRule> = serde_json::from_value(serde_json::json!([
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]}
    ]))
    .unwrap();
    assert!(granted(&named).unwrap_err().contains("resourceNames"));
}
