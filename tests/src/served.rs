//! What the fake API server serves when the real controller runs against it: the kinds the
//! controller reads and writes, and the EndpointSlices the EndpointSlice controller would make
//! for a TrafficSplit's backend Services.

use serde_json::{Value, json};

use crate::fake_api_server::Resource;

/// The kinds the controller uses: TrafficSplits (with `/status`), Services, EndpointSlices,
/// HTTPRoutes and Events; plus Pods when `with_pods` (what the agent reads).
pub fn controller_resources(with_pods: bool) -> Vec<Resource> {
    let r = |prefix, plural, kind, subresources| Resource {
        prefix,
        plural,
        kind,
        namespaced: true,
        subresources,
    };
    let mut out = vec![
        r(
            "/apis/splitscope.dev/v1alpha1",
            "trafficsplits",
            "TrafficSplit",
            &["status"][..],
        ),
        r("/api/v1", "services", "Service", &[]),
        r(
            "/apis/discovery.k8s.io/v1",
            "endpointslices",
            "EndpointSlice",
            &[],
        ),
        r(
            "/apis/gateway.networking.k8s.io/v1",
            "httproutes",
            "HTTPRoute",
            &[],
        ),
        r("/apis/events.k8s.io/v1", "events", "Event", &[]),
    ];
    if with_pods {
        out.push(r("/api/v1", "pods", "Pod", &[]));
    }
    out
}

/// One ready endpoint: the Pod's name and uid, and its address.
pub struct PodEndpoint<'a> {
    pub pod: &'a str,
    pub uid: &'a str,
    pub address: &'a str,
}

/// The EndpointSlice of `shop/checkout-<backend>` (a backend Service of TrafficSplit
/// `shop/checkout`), labelled as the EndpointSlice controller labels the slices of our Services.
pub fn checkout_slice(backend: &str, endpoints: &[PodEndpoint<'_>]) -> Value {
    let service = format!("checkout-{backend}");
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-x1"), "namespace": "shop",
            "labels": {
                "kubernetes.io/service-name": service,
                "app.kubernetes.io/managed-by": "splitscope",
                "splitscope.dev/traffic-split": "checkout",
            },
        },
        "addressType": "IPv4",
        "endpoints": endpoints.iter().map(|e| json!({
            "addresses": [e.address],
            "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "name": e.pod, "namespace": "shop", "uid": e.uid},
        })).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

/// `shop/checkout` as the design writes it, past its first reconcile (finalizer added: the fake
/// API server serves no JSON patches), with `backends` as (name, version label, weight) and
/// `rollout` if any.
pub fn checkout(backends: &[(&str, &str, i32)], rollout: Option<Value>) -> Value {
    let mut ts = json!({
        "apiVersion": "splitscope.dev/v1alpha1", "kind": "TrafficSplit",
        "metadata": {
            "name": "checkout", "namespace": "shop", "uid": "ts-uid-1", "generation": 1,
            "finalizers": ["splitscope.dev/cleanup"],
        },
        "spec": {
            "service": "checkout",
            "selector": {"app": "checkout"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            "backends": backends.iter().map(|(name, version, weight)| json!(
                {"name": name, "labels": {"version": version}, "weight": weight}
            )).collect::<Vec<_>>(),
            "routing": {"provider": "GatewayAPI"},
            "deletionPolicy": "Delete",
        },
    });
    if let Some(rollout) = rollout {
        ts["spec"]["rollout"] = rollout;
    }
    ts
}
