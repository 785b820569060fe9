//! Ready endpoints per backend Service, from the EndpointSlices the controller watches (those
//! labelled `app.kubernetes.io/managed-by=splitscope`: the EndpointSlice controller copies the
//! Service's labels onto its slices).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label the EndpointSlice controller puts on every slice, naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The slices of `namespace/service` (the EndpointSlice controller's label names the Service).
fn slices_of<'s>(
    slices: &'s [Arc<EndpointSlice>],
    namespace: &'s str,
    service: &'s str,
) -> impl Iterator<Item = &'s EndpointSlice> {
    slices.iter().map(|s| &**s).filter(move |slice| {
        slice.metadata.namespace.as_deref() == Some(namespace)
            && slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(service)
    })
}

/// Ready endpoints of `namespace/service`, or `None` when it has no EndpointSlice yet.
///
/// An endpoint counts when its `ready` condition is not false (the API says nil means ready).
/// Endpoints are deduplicated by pod (or first address) because one may briefly appear in two
/// slices while the EndpointSlice controller moves it.
pub fn ready_endpoints(slices: &[Arc<EndpointSlice>], namespace: &str, service: &str) -> Option<i32> {
    let mut seen_slice = false;
    let mut ready = BTreeSet::new();
    for slice in slices_of(slices, namespace, service) {
        seen_slice = true;
        for ep in slice.endpoints.iter().flatten() {
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let id = ep
                .target_ref
                .as_ref()
                .and_then(|r| r.uid.clone())
                .or_else(|| ep.addresses.first().cloned());
            if let Some(id) = id {
                ready.insert(id);
            }
        }
    }
    seen_slice.then(|| i32::try_from(ready.len()).unwrap_or(i32::MAX))
}

/// Names of the Pods behind `namespace/service` (its endpoints' target references, ready or not:
/// a pod that served in the last analysis window may have turned unready since), sorted.
pub fn pods(slices: &[Arc<EndpointSlice>], namespace: &str, service: &str) -> Vec<String> {
    let mut pods = BTreeSet::new();
    for slice in slices_of(slices, namespace, service) {
        for ep in slice.endpoints.iter().flatten() {
            if let Some(target) = &ep.target_ref
                && target.kind.as_deref() == Some("Pod")
                && let Some(name) = &target.name
            {
                pods.insert(name.clone());
            }
        }
    }
    pods.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::fixtures::slice;

    #[test]
    fn counts_ready_unique_endpoints_of_the_service() {
        let slices = vec![
            Arc::new(slice(
                "shop",
                "checkout-stable",
                "a",
                &[("p1", Some(true)), ("p2", None), ("p3", Some(false))],
            )),
            // p2 again in a second slice (mid-move): counted once.
            Arc::new(slice(
                "shop",
                "checkout-stable",
                "b",
                &[("p2", Some(true)), ("p4", Some(true))],
            )),
            Arc::new(slice("shop", "checkout-canary", "a", &[])),
            Arc::new(slice("other", "checkout-stable", "a", &[("p9", Some(true))])),
        ];
        assert_eq!(ready_endpoints(&slices, "shop", "checkout-stable"), Some(3));
        assert_eq!(ready_endpoints(&slices, "shop", "checkout-canary"), Some(0));
        assert_eq!(ready_endpoints(&slices, "shop", "checkout-beta"), None);
    }

    #[test]
    fn pods_of_a_service_from_its_slices() {
        let mut a = slice(
            "shop",
            "checkout-canary",
            "a",
            &[("u1", Some(true)), ("u2", Some(false))],
        );
        let b = slice("shop", "checkout-canary", "b", &[("u1", Some(true))]);
        let other = slice("shop", "checkout-stable", "a", &[("u9", Some(true))]);
        // An endpoint that is not a Pod (e.g. a manually managed address) is no pod.
        if let Some(eps) = a.endpoints.as_mut() {
            eps.push(k8s_openapi::api::discovery::v1::Endpoint {
                addresses: vec!["10.9.9.9".into()],
                ..Default::default()
            });
        }
        let slices: Vec<_> = [a, b, other].into_iter().map(Arc::new).collect();
        assert_eq!(pods(&slices, "shop", "checkout-canary"), ["pod-u1", "pod-u2"]);
        assert_eq!(pods(&slices, "other", "checkout-canary"), Vec::<String>::new());
    }
}
