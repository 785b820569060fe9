//! Test data and mock-API scenarios for the reconciler (as in kube-rs/controller-rs).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::trafficsplit::{
    Backend, DeletionPolicy, Protocol, Routing, ServicePort, TrafficSplit, TrafficSplitSpec,
};

pub const UID: &str = "5c7e0a56-4a44-4d2c-9a2e-0f3d1b6c8e11";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The design's example: shop/checkout, 95/5 between stable and canary.
pub fn traffic_split() -> TrafficSplit {
    let mut ts = TrafficSplit::new(
        "checkout",
        TrafficSplitSpec {
            service: None,
            selector: labels(&[("app", "checkout")]),
            ports: vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                protocol: Protocol::Tcp,
            }],
            backends: vec![
                Backend {
                    name: "stable".into(),
                    labels: labels(&[("version", "v1")]),
                    weight: 95,
                },
                Backend {
                    name: "canary".into(),
                    labels: labels(&[("version", "v2")]),
                    weight: 5,
                },
            ],
            routing: Routing::default(),
            deletion_policy: DeletionPolicy::Delete,
        },
    );
    ts.metadata = ObjectMeta {
        name: Some("checkout".into()),
        namespace: Some("shop".into()),
        uid: Some(UID.into()),
        generation: Some(1),
        resource_version: Some("100".into()),
        ..ObjectMeta::default()
    };
    ts
}

// ---------------------------------------------------------------------------------------------
// Mock-API scenarios: each names a moment of the lifecycle and scripts the exact requests the
// reconciler must send for it (mock_api.rs checks order, bodies and RBAC).
// ---------------------------------------------------------------------------------------------

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};

use super::backoff::ErrorBackoff;
use super::context::{Context, Error};
use super::endpoints::ready_endpoints;
use super::metrics::Metrics;
use super::mock_api::{self, Expect, Seen, Transcript};
use super::reconcile::reconcile;
use super::render::{Route, render};
use super::route_apis::RouteApis;
use super::status::{self, BackendObservation, Observation, Outcome};
use super::trafficsplit::FINALIZER;

pub const TS_PATH: &str = "/apis/splitscope.dev/v1alpha1/namespaces/shop/trafficsplits/checkout";
pub const SERVICES_PATH: &str = "/api/v1/namespaces/shop/services";
pub const ROUTE_PATH: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout";
pub const DR_PATH: &str = "/apis/networking.istio.io/v1/namespaces/shop/destinationrules/checkout";
pub const VS_PATH: &str = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/checkout";
pub const GATEWAY_DISCOVERY_PATH: &str = "/apis/gateway.networking.k8s.io/v1";

pub fn service_path(name: &str) -> String {
    format!("{SERVICES_PATH}/{name}")
}

/// The example with our finalizer (past the first reconcile).
pub fn with_finalizer(mut ts: TrafficSplit) -> TrafficSplit {
    ts.metadata.finalizers = Some(vec![FINALIZER.into()]);
    ts
}

/// Marked for deletion.
pub fn deleting(ts: TrafficSplit) -> TrafficSplit {
    let mut ts = with_finalizer(ts);
    ts.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1_700_000_000).unwrap()));
    ts
}

/// A live copy of a rendered child, as the API server returns it (uid, resourceVersion, and the
/// defaults it fills in).
pub fn live<T: serde::Serialize>(object: &T) -> Value {
    let mut v = serde_json::to_value(object).unwrap();
    let name = v["metadata"]["name"].as_str().unwrap().to_string();
    let kind = v["kind"].as_str().unwrap().to_lowercase();
    v["metadata"]["uid"] = json!(format!("uid-{kind}-{name}"));
    v["metadata"]["resourceVersion"] = json!("7");
    if kind == "service" {
        v["spec"]["clusterIP"] = json!("10.96.0.42");
        v["spec"]["type"] = json!("ClusterIP");
        v["spec"]["sessionAffinity"] = json!("None");
    }
    v
}

pub fn service_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "9"}, "items": items})
}

/// The status the reconciler computes for `ts` given the EndpointSlices, as if written earlier.
pub fn settled_status(ts: &TrafficSplit, slices: &[EndpointSlice], route: &str) -> TrafficSplit {
    let mut ts = ts.clone();
    let slices: Vec<Arc<EndpointSlice>> = slices.iter().cloned().map(Arc::new).collect();
    let service = ts.service_name();
    let obs = Observation {
        generation: ts.metadata.generation,
        service: service.clone(),
        backends: ts
            .spec
            .backends
            .iter()
            .map(|b| {
                let svc = super::trafficsplit::backend_service_name(&service, &b.name);
                BackendObservation {
                    name: b.name.clone(),
                    ready_endpoints: ready_endpoints(&slices, "shop", &svc),
                    service: svc,
                    weight: b.weight,
                }
            })
            .collect(),
        outcome: Outcome::Applied(route.into()),
    };
    ts.status = Some(status::compute(
        None,
        &obs,
        &Time(Timestamp::from_second(1_600_000_000).unwrap()),
    ));
    ts
}

/// Ready EndpointSlices for both backends of the example.
pub fn ready_slices() -> Vec<EndpointSlice> {
    use super::endpoints::tests::slice;
    vec![
        slice(
            "shop",
            "checkout-stable",
            "x1",
            &[("p1", Some(true)), ("p2", Some(true))],
        ),
        slice("shop", "checkout-canary", "x1", &[("p3", Some(true))]),
    ]
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

/// A status patch through /status; `check` sees the status.
pub fn patch_status(check: impl Fn(&Value) + Send + 'static) -> Expect {
    Expect::new("PATCH", format!("{TS_PATH}/status"))
        .check(move |seen| {
            assert_ssa(seen);
            assert_eq!(seen.body["kind"], "TrafficSplit");
            check(&seen.body["status"]);
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

/// The condition `type_` of a status body.
pub fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
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
    /// The canary was removed from the spec: its Service is deleted.
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
}

impl Scenario {
    pub const ALL: [Scenario; 14] = [
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
    ];
}

/// What one scenario produced.
pub struct Run {
    pub result: Result<Action, Error>,
    pub transcript: Transcript,
    pub metrics: Arc<Metrics>,
}

impl Scenario {
    /// Input object, served routing APIs, EndpointSlices, and the request script.
    pub fn setup(self) -> (TrafficSplit, RouteApis, Vec<EndpointSlice>, Vec<Expect>) {
        let base = with_finalizer(traffic_split());
        let desired = render(&base);
        let [root, stable, canary] = [0, 1, 2].map(|i| desired.services[i].clone());
        let Route::GatewayApi(route) = desired.route.clone() else {
            unreachable!()
        };
        let sel_root = json!({"app": "checkout"});
        let sel_stable = json!({"app": "checkout", "version": "v1"});
        let sel_canary = json!({"app": "checkout", "version": "v2"});
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
        let gateway_only = || RouteApis::new(true, false);
        match self {
            Scenario::FinalizerCreation => (
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
                script.push(apply_service("checkout", sel_root));
                script.push(apply_service("checkout-stable", sel_stable));
                script.push(apply_service("checkout-canary", sel_canary));
                script.push(apply_route(json!([
                    ["checkout-stable", 80, 95],
                    ["checkout-canary", 80, 5]
                ])));
                script.push(list_services(vec![live(&root), live(&stable), live(&canary)]));
                script.push(patch_status(|status| {
                    assert_eq!(status["phase"], "Pending");
                    assert_eq!(status["observedGeneration"], 1);
                    assert_eq!(status["service"], "checkout");
                    assert_eq!(status["weights"], "stable=95,canary=5");
                    assert_eq!(condition(status, "Ready")["reason"], "EndpointsPending");
                    assert_eq!(condition(status, "Accepted")["status"], "True");
                    assert_eq!(
                        status["backends"],
                        json!([
                            {"name": "stable", "service": "checkout-stable", "weight": 95, "readyEndpoints": 0},
                            {"name": "canary", "service": "checkout-canary", "weight": 5, "readyEndpoints": 0}
                        ])
                    );
                }));
                (base, gateway_only(), vec![], script)
            }
            Scenario::Resync => {
                let slices = ready_slices();
                let ts = settled_status(&base, &slices, "HTTPRoute checkout");
                let mut script = gets_live(&[&root, &stable, &canary]);
                script.push(Expect::new("GET", ROUTE_PATH).reply(200, live(&*route)));
                script.push(list_services(vec![live(&root), live(&stable), live(&canary)]));
                (ts, gateway_only(), slices, script)
            }
            Scenario::WeightChange => {
                let slices = ready_slices();
                let mut ts = settled_status(&base, &slices, "HTTPRoute checkout");
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
                script.push(patch_status(|status| {
                    assert_eq!(status["phase"], "Ready");
                    assert_eq!(status["observedGeneration"], 2);
                    assert_eq!(status["weights"], "stable=50,canary=50");
                    let ready = condition(status, "Ready");
                    assert_eq!(ready["status"], "True");
                    // Ready stayed True: its transition time is the earlier one.
                    assert_eq!(ready["lastTransitionTime"], "2020-09-13T12:26:40Z");
                }));
                (ts, gateway_only(), slices, script)
            }
            Scenario::Conflict => {
                let foreign = json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "checkout", "namespace": "shop", "uid": "foreign-uid", "labels": {"app": "legacy"}},
                    "spec": {"selector": {"app": "legacy"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}
                });
                let script = vec![
                    Expect::new("GET", service_path("checkout")).reply(200, foreign),
                    Expect::new("GET", service_path("checkout-stable")).not_found(),
                    Expect::new("GET", service_path("checkout-canary")).not_found(),
                    Expect::new("GET", ROUTE_PATH).not_found(),
                    patch_status(|status| {
                        assert_eq!(status["phase"], "Degraded");
                        let ready = condition(status, "Ready");
                        assert_eq!(ready["status"], "False");
                        assert_eq!(ready["reason"], "Conflict");
                        let msg = ready["message"].as_str().unwrap();
                        assert!(
                            msg.contains("Service shop/checkout (not created by this TrafficSplit)"),
                            "{msg}"
                        );
                    }),
                ];
                (base, gateway_only(), vec![], script)
            }
            Scenario::BackendRemoved => {
                let slices = ready_slices();
                let mut ts = settled_status(&base, &slices, "HTTPRoute checkout");
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
                script.push(patch_status(|status| {
                    assert_eq!(status["weights"], "stable=100");
                    assert_eq!(status["backends"].as_array().unwrap().len(), 1);
                }));
                (ts, gateway_only(), slices, script)
            }
            Scenario::InvalidSpec => {
                let mut ts = base.clone();
                ts.spec.backends[1].weight = 10;
                let script = vec![patch_status(|status| {
                    assert_eq!(status["phase"], "Degraded");
                    let ready = condition(status, "Ready");
                    assert_eq!(ready["reason"], "InvalidSpec");
                    assert_eq!(
                        ready["message"],
                        "spec.backends: weights must sum to 100, got 105 (stable=95, canary=10)"
                    );
                    assert_eq!(condition(status, "Accepted")["reason"], "InvalidSpec");
                })];
                (ts, gateway_only(), vec![], script)
            }
            Scenario::RouteApiMissing => {
                let mut script = vec![Expect::new("GET", GATEWAY_DISCOVERY_PATH).not_found()];
                script.extend(gets_absent());
                script.push(apply_service("checkout", sel_root));
                script.push(apply_service("checkout-stable", sel_stable));
                script.push(apply_service("checkout-canary", sel_canary));
                script.push(list_services(vec![]));
                script.push(patch_status(|status| {
                    assert_eq!(status["phase"], "Degraded");
                    let ready = condition(status, "Ready");
                    assert_eq!(ready["status"], "False");
                    assert_eq!(ready["reason"], "RouteAPIUnavailable");
                    let msg = ready["message"].as_str().unwrap();
                    assert!(msg.contains("gateway.networking.k8s.io/v1 HTTPRoute"), "{msg}");
                }));
                (base, RouteApis::new(false, false), vec![], script)
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
                script.push(apply_service("checkout", sel_root));
                script.push(apply_service("checkout-stable", sel_stable));
                script.push(apply_service("checkout-canary", sel_canary));
                script.push(apply_route(json!([
                    ["checkout-stable", 80, 95],
                    ["checkout-canary", 80, 5]
                ])));
                script.push(list_services(vec![]));
                script.push(patch_status(|status| {
                    assert_eq!(condition(status, "Ready")["reason"], "EndpointsPending");
                }));
                (base, RouteApis::new(false, false), vec![], script)
            }
            Scenario::IstioCreation => {
                let mut ts = base.clone();
                ts.spec.routing.provider = super::trafficsplit::Provider::Istio;
                let mut script = gets_absent();
                script.push(Expect::new("GET", DR_PATH).not_found());
                script.push(Expect::new("GET", VS_PATH).not_found());
                script.push(apply_service("checkout", sel_root));
                script.push(apply_service("checkout-stable", sel_stable));
                script.push(apply_service("checkout-canary", sel_canary));
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
                script.push(patch_status(|status| {
                    assert_eq!(condition(status, "Accepted")["status"], "True");
                    assert!(condition(status, "Ready")["message"].is_string());
                }));
                (ts, RouteApis::new(false, true), vec![], script)
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
                script.push(apply_service("checkout", sel_root));
                script.push(apply_service("checkout-stable", sel_stable));
                script.push(apply_service("checkout-canary", sel_canary));
                script.push(apply_route(json!([
                    ["checkout-stable", 80, 95],
                    ["checkout-canary", 80, 5]
                ])));
                script.push(list_services(vec![]));
                script.push(patch_status(|_| {}));
                (base, gateway_only(), vec![], script)
            }
            Scenario::CleanupIstio => {
                let mut ts = deleting(traffic_split());
                ts.spec.routing.provider = super::trafficsplit::Provider::Istio;
                let Route::Istio {
                    destination_rule,
                    virtual_service,
                } = render(&ts).route
                else {
                    unreachable!()
                };
                let script = vec![
                    Expect::new("GET", VS_PATH).reply(200, live(&virtual_service)),
                    delete(VS_PATH.into(), "uid-virtualservice-checkout".into()),
                    Expect::new("GET", DR_PATH).reply(200, live(&destination_rule)),
                    delete(DR_PATH.into(), "uid-destinationrule-checkout".into()),
                    list_services(vec![]),
                    Expect::new("PATCH", TS_PATH).reply(200, serde_json::to_value(traffic_split()).unwrap()),
                ];
                (ts, RouteApis::new(false, true), vec![], script)
            }
            Scenario::Cleanup | Scenario::CleanupOrphan => {
                let mut ts = deleting(traffic_split());
                if matches!(self, Scenario::CleanupOrphan) {
                    ts.spec.deletion_policy = super::trafficsplit::DeletionPolicy::Orphan;
                }
                let mut script = vec![
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
                script.push(
                    Expect::new("PATCH", TS_PATH)
                        .check(|seen| {
                            assert_eq!(
                                seen.body,
                                json!([
                                    {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                                    {"op": "remove", "path": "/metadata/finalizers/0"}
                                ])
                            );
                        })
                        .reply(200, serde_json::to_value(traffic_split()).unwrap()),
                );
                (ts, gateway_only(), vec![], script)
            }
        }
    }

    /// Runs one reconcile of the scenario against the scripted mock API.
    pub async fn run(self) -> Run {
        let (ts, route_apis, slices, script) = self.setup();
        let (client, handle) = mock_api::client();
        let server = mock_api::serve(handle, script);
        let (store, mut writer) = reflector::store::<EndpointSlice>();
        for slice in slices {
            writer.apply_watcher_event(&watcher::Event::Apply(slice));
        }
        let metrics = Arc::new(Metrics::new().unwrap());
        metrics.set_trafficsplit("shop", "checkout", &[("stable".into(), 95)], true);
        let ctx = Arc::new(Context {
            recorder: Recorder::new(client.clone(), super::events::reporter(Some("test".into()))),
            client,
            metrics: metrics.clone(),
            slices: store,
            route_apis,
            backoff: ErrorBackoff::default(),
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
}
