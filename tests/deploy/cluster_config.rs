//! deploy/kind-config.yaml and deploy/gateway-api/ (VERSION and the HTTPRoute CRD), which
//! `cargo xtask kind-up` reads.

use serde_json::Value;

use crate::kustomize::{read_yaml_file, render, repo_root};

#[test]
fn kind_cluster_maps_the_grafana_and_prometheus_node_ports() {
    let config = read_yaml_file(&repo_root().join("deploy/kind-config.yaml"))
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(config["kind"], "Cluster");
    assert_eq!(config["apiVersion"], "kind.x-k8s.io/v1alpha4");
    assert_eq!(
        config["name"], "splitscope",
        "xtask kind-up names the cluster splitscope"
    );
    let nodes = config["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["role"], "control-plane");
    let mappings: Vec<(i64, i64, String)> = nodes[0]["extraPortMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["listenAddress"], "127.0.0.1", "only reachable from this host");
            (
                m["containerPort"].as_i64().unwrap(),
                m["hostPort"].as_i64().unwrap(),
                m["protocol"].as_str().unwrap_or("TCP").to_owned(),
            )
        })
        .collect();
    let monitoring = render("deploy/prometheus-grafana");
    for (service, host_port) in [("splitscope-grafana", 3000), ("splitscope-prometheus", 9090)] {
        let svc: &Value = monitoring.find("Service", service);
        assert_eq!(svc["spec"]["type"], "NodePort");
        let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!(
            mappings.contains(&(node_port, host_port, "TCP".to_owned())),
            "{service}: nodePort {node_port} is not mapped to localhost:{host_port}: {mappings:?}"
        );
    }
}

#[test]
fn gateway_api_version_is_a_release_tag() {
    let version = std::fs::read_to_string(repo_root().join("deploy/gateway-api/VERSION")).unwrap();
    let version = version.trim();
    let numbers: Vec<&str> = version.strip_prefix('v').expect("vX.Y.Z").split('.').collect();
    assert_eq!(numbers.len(), 3, "{version}");
    assert!(numbers.iter().all(|n| n.parse::<u32>().is_ok()), "{version}");
}

/// The Gateway API CRD the repository carries (and kind-up and the e2e tests install) is the
/// release VERSION pins, and a CRD the API server would take.
#[test]
fn the_carried_gateway_api_crd_is_the_pinned_release() {
    let version = std::fs::read_to_string(repo_root().join("deploy/gateway-api/VERSION")).unwrap();
    let docs = crate::kustomize::read_yaml_file(&repo_root().join("deploy/gateway-api/httproutes.yaml"));
    assert_eq!(docs.len(), 1, "one CRD");
    let crd = &docs[0];
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "httproutes.gateway.networking.k8s.io");
    assert_eq!(
        crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"],
        version.trim()
    );
    assert_eq!(
        crd["metadata"]["annotations"]["gateway.networking.k8s.io/channel"],
        "standard"
    );
    let served: Vec<&str> = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["served"] == true)
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(served.contains(&"v1"), "{served:?}");
}
