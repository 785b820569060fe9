//! Mock-API scenarios of the reconciler, as in kube-rs/controller-rs: each names a moment of the
//! lifecycle and scripts the exact requests the reconciler must send for it (mock_api.rs checks
//! order, bodies and RBAC). Every scenario starts from an empty metrics registry; one that needs
//! earlier series (a removed backend, a deleted TrafficSplit) seeds them in its own setup.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};

use super::fixtures::{
    EARLIER, NOW, UID, backends, condition, deleting, live, pending_status, ready_slices,
    settled_ready_status, status_matches, traffic_split, with_finalizer, with_status,
};
use super::mock_api::{self, Expect, Seen, Transcript};
use crate::controller::api::trafficsplit::{DeletionPolicy, FINALIZER, Provider, TrafficSplit};
use crate::controller::events;
use crate::controller::objects::services;
use crate::controller::reconcile::reconcile;
use crate::controller::rollout::analysis::prometheus::Prometheus;
use crate::controller::routing::{self, RouteApis};
use crate::controller::runtime::backoff::ErrorBackoff;
use crate::controller::runtime::context::{Context, Error};
use crate::controller::runtime::metrics::Metrics;

pub const TS_PATH: &str = "/apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout";
pub const SERVICES_PATH: &str = "/api/v1/namespaces/shop/services";
pub const ROUTE_PATH: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout";
pub const DR_PATH: &str = "/apis/networking.istio.io/v1/namespaces/shop/destinationrules/checkout";
pub const VS_PATH: &str = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/checkout";
pub const GATEWAY_DISCOVERY_PATH: &str = "/apis/gateway.networking.k8s.io/v1";

pub fn service_path(name: &str) -> String {
    format!("{SERVICES_PATH}/{name}")
}

pub fn service_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "9"}, "items": items})
}

/// Asserts a server-side apply by our field manager.
pub fn assert_ssa(seen: &Seen) {
    assert!(
        seen.content_type.starts_with("application/apply-patch"),
        "{} is not a server-side apply: {}",
        seen.line(),
        seen.content_type
    );
    assert!(seen.query_has("fieldManager=splitscope"), "{}", seen.line());
    assert!(seen.query_has("force=true"), "{}", seen.line());
}

/// Asserts the applied object carries our labels and controller ownerReference.
pub fn assert_owned(body: &Value) {
    let labels = &body["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "splitscope", "{body}");
    assert_eq!(labels["splitscope.dev/traffic-split"], "checkout", "{body}");
    let owner = &body["metadata"]["ownerReferences"][0];
    assert_eq!(owner["apiVersion"], "splitscope.dev/v1alpha1");
    assert_eq!(owner["kind"], "TrafficSplit");
    assert_eq!(owner["name"], "checkout");
    assert_eq!(owner["uid"], UID);
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
}

/// An SSA of the Service `name` with `selector`; replies with the live object.
pub fn apply_service(name: &str, selector: Value) -> Expect {
    Expect::new("PATCH", service_path(name))
        .check(move |seen| {
            assert_ssa(seen);
            assert_owned(&seen.body);
            assert_eq!(seen.body["kind"], "Service");
            assert_eq!(seen.body["spec"]["selector"], selector, "{}", seen.body);
            assert_eq!(
                seen.body["spec"]["ports"],
                json!([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}])
            );
        })
        .echo()
}

/// An SSA of the HTTPRoute with `weights` for (stable, canary…).
pub fn apply_route(weights: Value) -> Expect {
    Expect::new("PATCH", ROUTE_PATH)
        .check(move |seen| {
            assert_ssa(seen);
            assert_owned(&seen.body);
            assert_eq!(seen.body["apiVersion"], "gateway.networking.k8s.io/v1");
            assert_eq!(seen.body["kind"], "HTTPRoute");
            let refs: Vec<Value> = seen.body["spec"]["rules"][0]["backendRefs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| json!([r["name"], r["port"], r["weight"]]))
                .collect();
            assert_eq!(Value::Array(refs), weights, "{}", seen.body);
            assert_eq!(
                seen.body["spec"]["parentRefs"],
                json!([{"group": "", "kind": "Service", "name": "checkout", "port": 80}])
            );
        })
        .echo()
}

/// The LIST of our Services (prune / cleanup), answered with `items`.
pub fn list_services(items: Vec<Value>) -> Expect {
    Expect::new("GET", SERVICES_PATH)
        .check(|seen| {
            assert!(
                seen.query.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dsplitscope%2Csplitscope.dev%2Ftraffic-split%3Dcheckout"),
                "{}",
                seen.line()
            );
        })
        .reply(200, service_list(items))
}

/// A status patch through /status that must write exactly `expected` (a literal; see
/// `status_matches` for lastTransitionTime).
pub fn patch_status(expected: Value) -> Expect {
    Expect::new("PATCH", format!("{TS_PATH}/status"))
        .check(move |seen| {
            assert_ssa(seen);
            assert_eq!(seen.body["kind"], "TrafficSplit");
            status_matches(&seen.body["status"], &expected);
        })
        .reply(200, serde_json::to_value(traffic_split()).unwrap())
}

/// DELETE of `path` with a uid precondition.
pub fn delete(path: String, uid: String) -> Expect {
    Expect::new("DELETE", path)
        .check(move |seen| {
            assert_eq!(seen.body["preconditions"]["uid"], json!(uid), "{}", seen.body);
        })
        .reply(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
        )
}

/// The controller's fresh read of the TrafficSplit (before a teardown, or a reconcile of a
/// rollout; reconcile/mod.rs, `fresh_enough`), answered with `ts`.
pub fn fresh_read(ts: &TrafficSplit) -> Expect {
    Expect::new("GET", TS_PATH).reply(200, serde_json::to_value(ts).unwrap())
}

/// The finalizer-removal PATCH kube-runtime's finalizer helper sends after a teardown.
pub fn remove_finalizer() -> Expect {
    Expect::new("PATCH", TS_PATH).check(|seen| {
        assert_eq!(
            seen.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ])
        );
    })
}

/// The named lifecycle moments the reconciler is tested on.
#[derive(Debug, Clone, Copy)]
pub enum Scenario {
    /// First sight of a TrafficSplit: add the finalizer, nothing else.
    FinalizerCreation,
    /// Nothing exists yet: apply three Services and the HTTPRoute, status Pending.
    Creation,
    /// Everything is in place and the status is current: read only, no write at all.
    Resync,
    /// 95/5 became 50/50: only the HTTPRoute (and the status) is written.
    WeightChange,
    /// The root Service belongs to someone else: status Conflict, nothing else written.
    Conflict,
    /// The canary was removed from the spec: its Service is deleted, its weight series dropped.
    BackendRemoved,
    /// Weights sum to 105: status InvalidSpec, nothing else read or written.
    InvalidSpec,
    /// Gateway API CRDs absent: Services applied, status names the missing API.
    RouteApiMissing,
    /// Gateway API CRDs installed after start-up: discovery finds them, the route is applied.
    RouteApiInstalledLater,
    /// provider Istio: Services, DestinationRule, VirtualService.
    IstioCreation,
    /// The root Service was orphaned by an earlier TrafficSplit of this name: adopted.
    Adoption,
    /// Deleted: route, backend Services, root Service, then the finalizer.
    Cleanup,
    /// Deleted with deletionPolicy Orphan: the root Service loses our ownerReference instead.
    CleanupOrphan,
    /// Deleted while Istio is the provider: VirtualService, then DestinationRule.
    CleanupIstio,
    /// A reconcile queued by the teardown's own deletions, handed the cached copy of a deleted
    /// TrafficSplit (still showing our finalizer) after the object is gone: nothing to do.
    CleanupAlreadyDone,
    /// The same, while the object still exists for another finalizer but ours is removed.
    CleanupFinalizerAlreadyRemoved,
    /// The object disappears between the fresh read and the finalizer's removal (404): done.
    CleanupObjectGoneMeanwhile,
}

impl Scenario {
    pub const ALL: [Scenario; 17] = [
        Scenario::FinalizerCreation,
        Scenario::Creation,
        Scenario::Resync,
        Scenario::WeightChange,
        Scenario::Conflict,
        Scenario::BackendRemoved,
        Scenario::InvalidSpec,
        Scenario::RouteApiMissing,
        Scenario::RouteApiInstalledLater,
        Scenario::IstioCreation,
        Scenario::Adoption,
        Scenario::Cleanup,
        Scenario::CleanupOrphan,
        Scenario::CleanupIstio,
        Scenario::CleanupAlreadyDone,
        Scenario::CleanupFinalizerAlreadyRemoved,
        Scenario::CleanupObjectGoneMeanwhile,
    ];
}

/// Everything a scenario starts from.
pub struct Setup {
    /// The object the reconcile is handed (as the Controller's store holds it).
    pub ts: TrafficSplit,
    pub route_apis: RouteApis,
    pub slices: Vec<EndpointSlice>,
    /// Series an earlier reconcile left in the registry: (backend weights, ready).
    pub series: Option<(Vec<(String, i32)>, bool)>,
    pub script: Vec<Expect>,
    /// The controller's `--prometheus-url` (a rollout scenario's Prometheus stand-in).
    pub prometheus_url: Option<String>,
}

/// What one scenario produced.
pub struct Run {
    pub result: Result<Action, Error>,
    pub transcript: Transcript,
    pub metrics: Arc<Metrics>,
}

fn gateway_only() -> RouteApis {
    RouteApis::new(true, false)
}

/// The example's metric series as a reconcile of the 95/5 split leaves them.
fn example_series() -> Option<(Vec<(String, i32)>, bool)> {
    Some((vec![("stable".into(), 95), ("canary".into(), 5)], true))
}

impl Scenario {
    pub fn setup(self) -> Setup {
        let base = with_finalizer(traffic_split());
        let [root, stable, canary] = {
            let rendered = services::render(&base);
            [0, 1, 2].map(|i| rendered[i].clone())
        };
        let routing::Route::GatewayApi(route) = routing::render(&base) else {
            unreachable!()
        };
        // The SSAs of the three Services of the example, in order.
        let apply_services = || {
            vec![
                apply_service("checkout", json!({"app": "checkout"})),
                apply_service("checkout-stable", json!({"app": "checkout", "version": "v1"})),
                apply_service("checkout-canary", json!({"app": "checkout", "version": "v2"})),
            ]
        };
        let gets_absent = || {
            vec![
                Expect::new("GET", service_path("checkout")).not_found(),
                Expect::new("GET", service_path("checkout-stable")).not_found(),
                Expect::new("GET", service_path("checkout-canary")).not_found(),
            ]
        };
        let gets_live = |services: &[&Service]| -> Vec<Expect> {
            services
                .iter()
                .map(|s| {
                    Expect::new("GET", service_path(s.metadata.name.as_deref().unwrap())).reply(200, live(*s))
                })
                .collect()
        };
        let setup = |ts, route_apis, slices, script| Setup {
            ts,
            route_apis,
            slices,
            series: None,
            script,
            prometheus_url: None,
        };
        match self {
            Scenario::FinalizerCreation => setup(
                traffic_split(),
                gateway_only(),
                vec![],
                vec![
                    Expect::new("PATCH", TS_PATH)
                        .check(|seen| {
                            assert!(
                                seen.content_type.starts_with("application/json-patch"),
                                "{}",
                                seen.content_type
                            );
                            assert_eq!(
                                seen.body,
                                json!([
                                    {"op": "test", "path": "/metadata/finalizers", "value": null},
                                    {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
                                ])
                            );
                        })
                        .reply(200, serde_json::to_value(&base).unwrap()),
                ],
            ),
            Scenario::Creation => {
                let mut script = gets_absent();
                script.push(Expect::new("GET", ROUTE_PATH).not_found());
                script.extend(apply_services());
                script.push(apply_route(json!([
                    ["checkout-stable", 80, 95],
                    ["checkout-canary", 80, 5]
                ])));
                script.push(list_services(vec![live(&root), live(&stable), live(&canary)]));
                script.push(patch_status(pending_status()));
                setup(base, gateway_only(), vec![], script)
            }
            Scenario::Resync => {
                let ts = with_status(base, settled_ready_status());
                let mut script = gets_live(&[&root, &stable, &canary]);
                script.push(Expect::new("GET", ROUTE_PATH).reply(200, live(&*route)));
                script.push(list_services(vec![live(&root), live(&stable), live(&canary)]));
                setup(ts, gateway_only(), ready_slices(), script)
            }
            Scenario::WeightChange => {
                let mut ts = with_status(base, settled_ready_status());
                ts.spec.backends[0].weight = 50;
                ts.spec.backends[1].weight = 50;
                ts.metadata.generation = Some(2);
                let mut script = gets_live(&[&root, &stable, &canary]);
                script.push(Expect::new("GET", ROUTE_PATH).reply(200, live(&*route)));
                script.push(apply_route(json!([
                    ["checkout-stable", 80, 50],
                    ["checkout-canary", 80, 50]
                ])));
                script.push(list_services(vec![live(&root), live(&stable), live(&canary)]));
                // Every condition keeps its status, so every transition time stays the earlier one.
                script.push(patch_status(json!({
                    "observedGeneration": 2,
                    "phase": "Ready",
                    "service": "checkout",
                    "weights": "stable=50,canary=50",
                    "conditions": [
                        condition("Ready", "True", "Reconciled", "HTTPRoute checkout applied with weights stable=50,canary=50", 2, EARLIER),
                        condition("Accepted", "True", "Valid", "the spec is valid", 2, EARLIER),
                        condition("BackendsAvailable", "True", "AllBackendsReady", "stable: 2 ready, canary: 1 ready", 2, EARLIER),
                    ],
                    "backends": backends(&[("stable", 50, 2), ("canary", 50, 1)]),
                })));
                setup(ts, gateway_only(), ready_slices(), script)
            }
            Scenario::Conflict => {
                let foreign = json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "checkout", "namespace": "shop", "uid": "foreign-uid", "labels": {"app": "legacy"}},
                    "spec": {"selector": {"app": "legacy"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}
                });
                let pending = "no EndpointSlice yet for Service checkout-stable; no EndpointSlice yet for Service checkout-canary";
                let script = vec![
                    Expect::new("GET", service_path("checkout")).reply(200, foreign),
                    Expect::new("GET", service_path("checkout-stable")).not_found(),
                    Expect::new("GET", service_path("checkout-canary")).not_found(),
                    Expect::new("GET", ROUTE_PATH).not_found(),
                    patch_status(json!({
                        "observedGeneration": 1,
                        "phase": "Degraded",
                        "service": "checkout",
                        "weights": "stable=95,canary=5",
                        "conditions": [
                            condition("Ready", "False", "Conflict", "not owned by this TrafficSplit, left untouched (delete or rename them to resolve): Service shop/checkout (not created by this TrafficSplit)", 1, NOW),
                            condition("Accepted", "True", "Valid", "the spec is valid", 1, NOW),
                            condition("BackendsAvailable", "Unknown", "EndpointsPending", pending, 1, NOW),
                        ],
                        "backends": backends(&[("stable", 95, 0), ("canary", 5, 0)]),
                    })),
                ];
                setup(base, gateway_only(), vec![], script)
            }
            Scenario::BackendRemoved => {
                let mut ts = with_status(base, settled_ready_status());
                ts.spec.backends.truncate(1);
                ts.spec.backends[0].weight = 100;
                ts.metadata.generation = Some(2);
                let mut script = gets_live(&[&root, &stable]);
                script.push(Expect::new("GET", ROUTE_PATH).reply(200, live(&*route)));
                script.push(apply_route(json!([["checkout-stable", 80, 100]])));
                script.push(list_services(vec![live(&root), live(&stable), live(&canary)]));
                script.push(delete(
                    service_path("checkout-canary"),
                    "uid-service-checkout-canary".into(),
                ));
                script.push(patch_status(json!({
                    "observedGeneration": 2,
                    "phase": "Ready",
                    "service": "checkout",
                    "weights": "stable=100",
                    "conditions": [
                        condition("Ready", "True", "Reconciled", "HTTPRoute checkout applied with weights stable=100", 2, EARLIER),
                        condition("Accepted", "True", "Valid", "the spec is valid", 2, EARLIER),
                        condition("BackendsAvailable", "True", "AllBackendsReady", "stable: 2 ready", 2, EARLIER),
                    ],
                    "backends": backends(&[("stable", 100, 2)]),
                })));
                // The 95/5 reconcile before this one left a canary weight series: that it is gone
                // afterwards is what this scenario checks.
                Setup {
                    series: example_series(),
                    ..setup(ts, gateway_only(), ready_slices(), script)
                }
            }
            Scenario::InvalidSpec => {
                let mut ts = base.clone();
                ts.spec.backends[1].weight = 10;
                let message = "spec.backends: weights must sum to 100, got 105 (stable=95, canary=10)";
                let script = vec![patch_status(json!({
                    "observedGeneration": 1,
                    "phase": "Degraded",
                    "service": "checkout",
                    "weights": "stable=95,canary=10",
                    "conditions": [
                        condition("Ready", "False", "InvalidSpec", message, 1, NOW),
                        condition("Accepted", "False", "InvalidSpec", message, 1, NOW),
                        condition("BackendsAvailable", "Unknown", "InvalidSpec", "not evaluated: the spec is invalid", 1, NOW),
                    ],
                    "backends": backends(&[("stable", 95, 0), ("canary", 10, 0)]),
                }))];
                setup(ts, gateway_only(), vec![], script)
            }
            Scenario::RouteApiMissing => {
                let mut script = vec![Expect::new("GET", GATEWAY_DISCOVERY_PATH).not_found()];
                script.extend(gets_absent());
                script.extend(apply_services());
                script.push(list_services(vec![]));
                let mut status = pending_status();
                status["phase"] = json!("Degraded");
                status["conditions"][0] = condition(
                    "Ready",
                    "False",
                    "RouteAPIUnavailable",
                    "gateway.networking.k8s.io/v1 HTTPRoute is not served by the API server (are its CRDs installed?); the Services are in place, the weights are not enforced",
                    1,
                    NOW,
                );
                script.push(patch_status(status));
                setup(base, RouteApis::new(false, false), vec![], script)
            }
            Scenario::RouteApiInstalledLater => {
                let mut script = vec![Expect::new("GET", GATEWAY_DISCOVERY_PATH).reply(
                    200,
                    json!({
                        "kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": "gateway.networking.k8s.io/v1",
                        "resources": [{"name": "httproutes", "singularName": "httproute", "namespaced": true,
                                       "kind": "HTTPRoute", "verbs": ["get", "list", "watch", "create", "patch", "delete"]}]
                    }),
                )];
                script.extend(gets_absent());
                script.push(Expect::new("GET", ROUTE_PATH).not_found());
                script.extend(apply_services());
                script.push(apply_route(json!([
                    ["checkout-stable", 80, 95],
                    ["checkout-canary", 80, 5]
                ])));
                script.push(list_services(vec![]));
                script.push(patch_status(pending_status()));
                setup(base, RouteApis::new(false, false), vec![], script)
            }
            Scenario::IstioCreation => {
                let mut ts = base.clone();
                ts.spec.routing.provider = Provider::Istio;
                let mut script = gets_absent();
                script.push(Expect::new("GET", DR_PATH).not_found());
                script.push(Expect::new("GET", VS_PATH).not_found());
                script.extend(apply_services());
                script.push(
                    Expect::new("PATCH", DR_PATH)
                        .check(|seen| {
                            assert_ssa(seen);
                            assert_owned(&seen.body);
                            assert_eq!(seen.body["kind"], "DestinationRule");
                            assert_eq!(seen.body["spec"]["host"], "checkout");
                        })
                        .echo(),
                );
                script.push(
                    Expect::new("PATCH", VS_PATH)
                        .check(|seen| {
                            assert_ssa(seen);
                            assert_owned(&seen.body);
                            assert_eq!(seen.body["kind"], "VirtualService");
                            let weights: Vec<&Value> = seen.body["spec"]["http"][0]["route"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|r| &r["weight"])
                                .collect();
                            assert_eq!(weights, [&json!(95), &json!(5)]);
                        })
                        .echo(),
                );
                script.push(list_services(vec![]));
                script.push(patch_status(pending_status()));
                setup(ts, RouteApis::new(false, true), vec![], script)
            }
            Scenario::Adoption => {
                let mut orphan = live(&root);
                orphan["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("ownerReferences");
                let mut script = vec![
                    Expect::new("GET", service_path("checkout")).reply(200, orphan),
                    Expect::new("GET", service_path("checkout-stable")).not_found(),
                    Expect::new("GET", service_path("checkout-canary")).not_found(),
                    Expect::new("GET", ROUTE_PATH).not_found(),
                ];
                script.extend(apply_services());
                script.push(apply_route(json!([
                    ["checkout-stable", 80, 95],
                    ["checkout-canary", 80, 5]
                ])));
                script.push(list_services(vec![]));
                script.push(patch_status(pending_status()));
                setup(base, gateway_only(), vec![], script)
            }
            Scenario::CleanupIstio => {
                let mut ts = deleting(traffic_split());
                ts.spec.routing.provider = Provider::Istio;
                let routing::Route::Istio(pair) = routing::render(&ts) else {
                    unreachable!()
                };
                let script = vec![
                    fresh_read(&ts),
                    Expect::new("GET", VS_PATH).reply(200, live(&pair.virtual_service)),
                    delete(VS_PATH.into(), "uid-virtualservice-checkout".into()),
                    Expect::new("GET", DR_PATH).reply(200, live(&pair.destination_rule)),
                    delete(DR_PATH.into(), "uid-destinationrule-checkout".into()),
                    list_services(vec![]),
                    remove_finalizer().reply(200, serde_json::to_value(traffic_split()).unwrap()),
                ];
                Setup {
                    series: example_series(),
                    ..setup(ts, RouteApis::new(false, true), vec![], script)
                }
            }
            Scenario::Cleanup | Scenario::CleanupOrphan => {
                let mut ts = deleting(traffic_split());
                if matches!(self, Scenario::CleanupOrphan) {
                    ts.spec.deletion_policy = DeletionPolicy::Orphan;
                }
                let mut script = vec![
                    fresh_read(&ts),
                    Expect::new("GET", ROUTE_PATH).reply(200, live(&*route)),
                    delete(ROUTE_PATH.into(), "uid-httproute-checkout".into()),
                    list_services(vec![live(&root), live(&stable), live(&canary)]),
                    delete(
                        service_path("checkout-stable"),
                        "uid-service-checkout-stable".into(),
                    ),
                    delete(
                        service_path("checkout-canary"),
                        "uid-service-checkout-canary".into(),
                    ),
                ];
                if matches!(self, Scenario::Cleanup) {
                    script.push(delete(service_path("checkout"), "uid-service-checkout".into()));
                } else {
                    script.push(
                        Expect::new("PATCH", service_path("checkout"))
                            .check(|seen| {
                                assert!(
                                    seen.content_type.starts_with("application/strategic-merge-patch"),
                                    "{}",
                                    seen.content_type
                                );
                                assert_eq!(
                                    seen.body,
                                    json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": UID}]}})
                                );
                            })
                            .reply(200, live(&root)),
                    );
                }
                script.push(remove_finalizer().reply(200, serde_json::to_value(traffic_split()).unwrap()));
                // The live TrafficSplit had series: that teardown drops them is what this checks.
                Setup {
                    series: example_series(),
                    ..setup(ts, gateway_only(), vec![], script)
                }
            }
            Scenario::CleanupAlreadyDone => {
                let stale = deleting(traffic_split());
                let script = vec![Expect::new("GET", TS_PATH).not_found()];
                setup(stale, gateway_only(), vec![], script)
            }
            Scenario::CleanupFinalizerAlreadyRemoved => {
                let stale = deleting(traffic_split());
                let mut live = stale.clone();
                live.metadata.finalizers = Some(vec!["example.com/backup".into()]);
                live.metadata.resource_version = Some("101".into());
                let script = vec![fresh_read(&live)];
                setup(stale, gateway_only(), vec![], script)
            }
            Scenario::CleanupObjectGoneMeanwhile => {
                let ts = deleting(traffic_split());
                let script = vec![
                    fresh_read(&ts),
                    Expect::new("GET", ROUTE_PATH).not_found(),
                    list_services(vec![]),
                    remove_finalizer().not_found(),
                ];
                setup(ts, gateway_only(), vec![], script)
            }
        }
    }

    /// Runs one reconcile of the scenario against the scripted mock API.
    pub async fn run(self) -> Run {
        run(self.setup()).await
    }
}

/// Runs one reconcile of `setup` against its scripted mock API, from a registry holding only the
/// series the setup names.
pub async fn run(setup: Setup) -> Run {
    run_with(setup, true, false).await
}

/// `run`, with the EndpointSlice cache synced (its first full list done) or not yet, and in a
/// leadership term that goes on or has ended.
pub async fn run_with(setup: Setup, slices_synced: bool, term_ended: bool) -> Run {
    let Setup {
        ts,
        route_apis,
        slices,
        series,
        script,
        prometheus_url,
    } = setup;
    let (client, handle) = mock_api::client();
    let server = mock_api::serve(handle, script);
    // The cache as the controller's watch leaves it after its first full list (a rollout waits
    // for that list before it decides), or in the middle of it.
    let (store, mut writer) = reflector::store::<EndpointSlice>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for slice in slices {
        writer.apply_watcher_event(&watcher::Event::InitApply(slice));
    }
    if slices_synced {
        writer.apply_watcher_event(&watcher::Event::InitDone);
    }
    let metrics = Arc::new(Metrics::new().unwrap());
    if let Some((weights, ready)) = series {
        metrics.set_trafficsplit("shop", "checkout", &weights, ready);
    }
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), events::reporter(Some("test".into()))),
        client,
        metrics: metrics.clone(),
        slices: store,
        route_apis,
        backoff: ErrorBackoff::default(),
        prometheus: Prometheus::new().unwrap(),
        prometheus_url,
        term: {
            let term = tokio_util::sync::CancellationToken::new();
            if term_ended {
                term.cancel();
            }
            term
        },
    });
    let result = tokio::time::timeout(Duration::from_secs(20), reconcile(Arc::new(ts), ctx))
        .await
        .expect("the reconcile did not finish: it waits for a reply the script does not give");
    let transcript = match server.await {
        Ok(t) => t,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("mock API server failed: {e}"),
    };
    Run {
        result,
        transcript,
        metrics,
    }
}
