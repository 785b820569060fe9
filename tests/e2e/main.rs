//! End-to-end tests of the TrafficSplit controller against a real cluster (tier 4).
//!
//! Run against a kind cluster (or any cluster KUBECONFIG points at, where you may install CRDs
//! and create namespaces):
//!
//!     kind create cluster
//!     cargo test -p splitscope-tests --test e2e -- --ignored
//!
//! Each test installs the CRDs (idempotent), makes a namespace of its own, runs the controller
//! in-process scoped to it, and asserts what a user would see. Pods use the `pause` image, which
//! kind nodes already have. Set SPLITSCOPE_E2E_KEEP=1 to keep the namespaces for inspection.

mod cluster;

use std::collections::BTreeMap;

use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use splitscope::controller::api::trafficsplit::{Phase, TrafficSplit};

use cluster::{RunningController, TestNamespace, delete_and_wait, eventually, install_crds};

/// The design's example, as a user writes it.
fn example(namespace: &str) -> Value {
    json!({
        "apiVersion": "splitscope.dev/v1alpha1",
        "kind": "TrafficSplit",
        "metadata": {"name": "checkout", "namespace": namespace},
        "spec": {
            "selector": {"app": "checkout"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            "backends": [
                {"name": "stable", "labels": {"version": "v1"}, "weight": 95},
                {"name": "canary", "labels": {"version": "v2"}, "weight": 5}
            ],
            "routing": {"provider": "GatewayAPI"}
        }
    })
}

fn ts_resource() -> ApiResource {
    ApiResource::erase::<TrafficSplit>(&())
}

async fn create_ts(client: &Client, namespace: &str, object: Value) -> Result<DynamicObject, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ts_resource());
    let obj: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &obj).await
}

/// A running pod (the pause image) with `labels`.
async fn pod(client: &Client, namespace: &str, name: &str, labels: &[(&str, &str)]) {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "ports": [{"containerPort": 8080}]}],
            "terminationGracePeriodSeconds": 0
        }
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    // A new namespace gets its default ServiceAccount a moment later; retry until then.
    eventually(&format!("pod {name} to be created"), || async {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => Some(()),
            Err(e) => {
                eprintln!("creating pod {name}: {e} (retrying)");
                None
            }
        }
    })
    .await;
}

fn condition(ts: &TrafficSplit, type_: &str) -> Option<(String, String, String)> {
    ts.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn route_weights(route: &HttpRoute) -> Vec<(String, Option<i32>)> {
    route
        .spec
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.backend_refs.iter().flatten())
        .map(|b| (b.name.clone(), b.weight))
        .collect()
}

/// The example's route, once its weights are `stable`/`canary`.
async fn route_at(routes: &Api<HttpRoute>, stable: i32, canary: i32) -> Option<()> {
    let want = vec![
        ("checkout-stable".to_string(), Some(stable)),
        ("checkout-canary".to_string(), Some(canary)),
    ];
    (route_weights(&routes.get("checkout").await.ok()?) == want).then_some(())
}

/// The example's `status.rollout`, once it is in `phase` with the canary at `canary`.
async fn rollout_at(
    api: &Api<TrafficSplit>,
    phase: &str,
    canary: i32,
) -> Option<splitscope::controller::api::rollout::RolloutStatus> {
    let r = api.get("checkout").await.ok()?.status?.rollout?;
    (r.phase.as_str() == phase && r.canary_weight == canary).then_some(r)
}

fn controlled_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true) && o.block_owner_deletion == Some(true))
}

async fn events(client: &Client, namespace: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn reasons(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.reason.clone()).collect()
}

/// Applies the example with two ready pods and waits until the TrafficSplit is Ready.
async fn ready_example(client: &Client, ns: &str) -> TrafficSplit {
    pod(client, ns, "stable-0", &[("app", "checkout"), ("version", "v1")]).await;
    pod(client, ns, "canary-0", &[("app", "checkout"), ("version", "v2")]).await;
    create_ts(client, ns, example(ns)).await.unwrap();
    let api: Api<TrafficSplit> = Api::namespaced(client.clone(), ns);
    eventually("the TrafficSplit to be Ready", || async {
        let ts = api.get("checkout").await.ok()?;
        let ready = condition(&ts, "Ready")?;
        (ready.0 == "True").then_some(ts)
    })
    .await
}

/// The example at 100/0 with `rollout`, a stable pod, and a canary pod when `canary_pod`.
async fn create_rollout(client: &Client, ns: &str, rollout: Value, canary_pod: bool) {
    pod(client, ns, "stable-0", &[("app", "checkout"), ("version", "v1")]).await;
    if canary_pod {
        pod(client, ns, "canary-0", &[("app", "checkout"), ("version", "v2")]).await;
    }
    let mut object = example(ns);
    object["spec"]["backends"][0]["weight"] = json!(100);
    object["spec"]["backends"][1]["weight"] = json!(0);
    object["spec"]["rollout"] = rollout;
    create_ts(client, ns, object).await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG, e.g. kind): cargo test -p splitscope-tests --test e2e -- --ignored"]
async fn creates_services_and_a_95_5_httproute_with_a_truthful_status_and_events() {
    let client = cluster::client().await;
    install_crds();
    let ns = TestNamespace::create(&client, "create").await;
    let controller = RunningController::start(&ns.name);

    let ts = ready_example(&client, &ns.name).await;
    let uid = ts.uid().unwrap();
    let status = ts.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.observed_generation, ts.metadata.generation);
    assert_eq!(status.weights.as_deref(), Some("stable=95,canary=5"));
    let ready: Vec<(String, i32)> = status
        .backends
        .iter()
        .map(|b| (b.service.clone(), b.ready_endpoints))
        .collect();
    assert_eq!(
        ready,
        [
            ("checkout-stable".to_string(), 1),
            ("checkout-canary".to_string(), 1)
        ]
    );
    for c in ["Ready", "Accepted", "BackendsAvailable"] {
        assert_eq!(condition(&ts, c).map(|c| c.0), Some("True".into()), "{c}");
    }

    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    for (name, selector) in [
        ("checkout", json!({"app": "checkout"})),
        ("checkout-stable", json!({"app": "checkout", "version": "v1"})),
        ("checkout-canary", json!({"app": "checkout", "version": "v2"})),
    ] {
        let svc = services.get(name).await.unwrap();
        let spec = serde_json::to_value(svc.spec.as_ref().unwrap()).unwrap();
        assert_eq!(spec["selector"], selector, "{name}");
        assert_eq!(spec["ports"][0]["port"], 80, "{name}");
        assert_eq!(spec["ports"][0]["targetPort"], 8080, "{name}");
        assert!(
            controlled_by(&svc.metadata, &uid),
            "{name} is not controlled by the TrafficSplit"
        );
        let labels = svc.labels();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "splitscope");
        assert_eq!(labels["splitscope.dev/traffic-split"], "checkout");
    }

    let routes: Api<HttpRoute> = Api::namespaced(client.clone(), &ns.name);
    let route = routes.get("checkout").await.unwrap();
    assert!(controlled_by(&route.metadata, &uid));
    assert_eq!(
        route_weights(&route),
        [
            ("checkout-stable".to_string(), Some(95)),
            ("checkout-canary".to_string(), Some(5))
        ]
    );
    let parent = &route.spec.parent_refs.as_ref().unwrap()[0];
    assert_eq!(
        (parent.kind.as_deref(), parent.name.as_str()),
        (Some("Service"), "checkout")
    );

    let got = reasons(&events(&client, &ns.name).await);
    assert!(got.iter().filter(|r| *r == "Created").count() >= 4, "{got:?}");

    // What `kubectl get ts` shows (printer columns).
    let table = cluster::kubectl_get(&["get", "ts", "-n", &ns.name]);
    assert!(
        table.contains("SERVICE") && table.contains("BACKENDS") && table.contains("PHASE"),
        "{table}"
    );
    assert!(
        table.contains("stable=95,canary=5") && table.contains("Ready"),
        "{table}"
    );

    controller.stop().await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG, e.g. kind): cargo test -p splitscope-tests --test e2e -- --ignored"]
async fn a_weight_change_rewrites_only_the_route() {
    let client = cluster::client().await;
    install_crds();
    let ns = TestNamespace::create(&client, "weights").await;
    let controller = RunningController::start(&ns.name);
    ready_example(&client, &ns.name).await;

    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let mut versions = BTreeMap::new();
    for name in ["checkout", "checkout-stable", "checkout-canary"] {
        versions.insert(name, services.get(name).await.unwrap().resource_version());
    }

    let api: Api<TrafficSplit> = Api::namespaced(client.clone(), &ns.name);
    let patch = json!({"spec": {"backends": [
        {"name": "stable", "labels": {"version": "v1"}, "weight": 50},
        {"name": "canary", "labels": {"version": "v2"}, "weight": 50}
    ]}});
    let updated = api
        .patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let generation = updated.metadata.generation;

    let routes: Api<HttpRoute> = Api::namespaced(client.clone(), &ns.name);
    eventually("the HTTPRoute to carry 50/50", || async {
        let route = routes.get("checkout").await.ok()?;
        (route_weights(&route)
            == [
                ("checkout-stable".to_string(), Some(50)),
                ("checkout-canary".to_string(), Some(50)),
            ])
        .then_some(())
    })
    .await;
    let ts = eventually("the status to describe the new generation", || async {
        let ts = api.get("checkout").await.ok()?;
        (ts.status.as_ref()?.observed_generation == generation).then_some(ts)
    })
    .await;
    assert_eq!(ts.status.unwrap().weights.as_deref(), Some("stable=50,canary=50"));
    // Give a stray Service write time to happen, then check none did.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for (name, before) in versions {
        let now = services.get(name).await.unwrap().resource_version();
        assert_eq!(now, before, "Service {name} was rewritten by a weight change");
    }
    controller.stop().await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG, e.g. kind): cargo test -p splitscope-tests --test e2e -- --ignored"]
async fn the_api_server_refuses_invalid_objects_with_a_clear_message() {
    let client = cluster::client().await;
    install_crds();
    let ns = TestNamespace::create(&client, "cel").await;
    // (object name, JSON pointer to change, new value, what the refusal must say)
    let cases = [
        (
            "weights-105",
            "/spec/backends/1/weight",
            json!(10),
            "weights must sum to 100",
        ),
        (
            "duplicate-names",
            "/spec/backends/1/name",
            json!("stable"),
            "backend names must be unique",
        ),
        (
            "parentrefs-istio",
            "/spec/routing",
            json!({"provider": "Istio", "parentRefs": [{"name": "public"}]}),
            "parentRefs is only allowed with provider GatewayAPI",
        ),
        (
            "weight-over-100",
            "/spec/backends/0/weight",
            json!(101),
            "spec.backends[0].weight",
        ),
        ("no-ports", "/spec/ports", json!([]), "spec.ports"),
    ];
    for (name, pointer, value, needle) in cases {
        let mut object = example(&ns.name);
        object["metadata"]["name"] = json!(name);
        *object.pointer_mut(pointer).unwrap() = value;
        match create_ts(&client, &ns.name, object).await {
            Ok(_) => panic!("{name}: the API server accepted an invalid TrafficSplit"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{name}: {status:?}");
                assert!(
                    status.message.contains(needle),
                    "{name}: {:?} does not say {needle:?}",
                    status.message
                );
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    // The valid example is accepted (the rules do not refuse everything).
    create_ts(&client, &ns.name, example(&ns.name)).await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG, e.g. kind): cargo test -p splitscope-tests --test e2e -- --ignored"]
async fn a_spec_the_schema_allows_but_the_controller_refuses_is_reported_as_invalid() {
    let client = cluster::client().await;
    install_crds();
    let ns = TestNamespace::create(&client, "invalid").await;
    let controller = RunningController::start(&ns.name);
    let mut object = example(&ns.name);
    // A backend label that contradicts the selector: no pod could match both.
    object["spec"]["backends"][1]["labels"]["app"] = json!("payments");
    create_ts(&client, &ns.name, object).await.unwrap();
    let api: Api<TrafficSplit> = Api::namespaced(client.clone(), &ns.name);
    let (_, reason, message) = eventually("Ready=False InvalidSpec", || async {
        let ts = api.get("checkout").await.ok()?;
        condition(&ts, "Ready").filter(|c| c.1 == "InvalidSpec")
    })
    .await;
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.backends[1].labels.app"), "{message}");
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        services.get_opt("checkout").await.unwrap().is_none(),
        "a child was written for an invalid spec"
    );
    assert!(reasons(&events(&client, &ns.name).await).contains(&"InvalidSpec".to_string()));
    controller.stop().await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG, e.g. kind): cargo test -p splitscope-tests --test e2e -- --ignored"]
async fn a_foreign_service_is_reported_as_a_conflict_and_left_alone() {
    let client = cluster::client().await;
    install_crds();
    let ns = TestNamespace::create(&client, "conflict").await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let foreign: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "checkout", "labels": {"owner": "someone-else"}},
        "spec": {"selector": {"app": "legacy"}, "ports": [{"port": 80, "targetPort": 9090}]}
    }))
    .unwrap();
    let before = services.create(&PostParams::default(), &foreign).await.unwrap();

    let controller = RunningController::start(&ns.name);
    create_ts(&client, &ns.name, example(&ns.name)).await.unwrap();
    let api: Api<TrafficSplit> = Api::namespaced(client.clone(), &ns.name);
    let ts = eventually("Ready=False Conflict", || async {
        let ts = api.get("checkout").await.ok()?;
        condition(&ts, "Ready").filter(|c| c.1 == "Conflict").map(|_| ts)
    })
    .await;
    let (_, _, message) = condition(&ts, "Ready").unwrap();
    assert!(
        message.contains(&format!("Service {}/checkout", ns.name)),
        "{message}"
    );
    assert_eq!(ts.status.unwrap().phase, Some(Phase::Degraded));

    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = services.get("checkout").await.unwrap();
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "the foreign Service was written"
    );
    assert!(after.owner_references().is_empty());
    // Nothing else was written either.
    assert!(services.get_opt("checkout-stable").await.unwrap().is_none());
    let routes: Api<HttpRoute> = Api::namespaced(client.clone(), &ns.name);
    assert!(routes.get_opt("checkout").await.unwrap().is_none());
    assert!(reasons(&events(&client, &ns.name).await).contains(&"Conflict".to_string()));
    controller.stop().await;
}

/// What the design promises about a teardown, from the `Deleted` Events' notes in time order: the
/// route first, then the backend Services in any order (nothing orders them, and on a real API
/// server their Events' times may fall either way), then the root Service.
fn check_deletion_order(order: &[String], ns: &str) -> Result<(), String> {
    let route = format!("HTTPRoute {ns}/checkout deleted");
    let mut backends = vec![
        format!("Service {ns}/checkout-stable deleted"),
        format!("Service {ns}/checkout-canary deleted"),
    ];
    backends.sort();
    let root = format!("Service {ns}/checkout deleted");
    let fail = || {
        Err(format!(
            "expected {route:?}, then {backends:?} in any order, then {root:?}; the Events say {order:?}"
        ))
    };
    let [first, middle @ .., last] = order else {
        return fail();
    };
    let mut middle = middle.to_vec();
    middle.sort();
    if *first != route || middle != backends || *last != root {
        return fail();
    }
    Ok(())
}

#[test]
fn the_deletion_order_check_accepts_either_backend_first_and_nothing_else() {
    let note = |s: &str| format!("{s} deleted");
    let route = note("HTTPRoute ns/checkout");
    let (stable, canary, root) = (
        note("Service ns/checkout-stable"),
        note("Service ns/checkout-canary"),
        note("Service ns/checkout"),
    );
    let ok = |o: &[&String]| check_deletion_order(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "ns");
    assert!(ok(&[&route, &stable, &canary, &root]).is_ok());
    assert!(ok(&[&route, &canary, &stable, &root]).is_ok());
    assert!(
        ok(&[&stable, &route, &canary, &root]).is_err(),
        "a backend before the route"
    );
    assert!(
        ok(&[&route, &stable, &root, &canary]).is_err(),
        "the root before a backend"
    );
    assert!(ok(&[&route, &stable, &root]).is_err(), "a backend missing");
    assert!(
        ok(&[&route, &stable, &stable, &canary, &root]).is_err(),
        "a backend twice"
    );
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG, e.g. kind): cargo test -p splitscope-tests --test e2e -- --ignored"]
async fn deletion_removes_the_route_then_backends_then_the_root_service() {
    let client = cluster::client().await;
    install_crds();
    let ns = TestNamespace::create(&client, "delete").await;
    let controller = RunningController::start(&ns.name);
    ready_example(&client, &ns.name).await;

    let api: Api<TrafficSplit> = Api::namespaced(client.clone(), &ns.name);
    delete_and_wait(&api, "checkout").await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let routes: Api<HttpRoute> = Api::namespaced(client.clone(), &ns.name);
    for name in ["checkout", "checkout-stable", "checkout-canary"] {
        eventually(&format!("Service {name} to be gone"), || async {
            matches!(services.get_opt(name).await, Ok(None)).then_some(())
        })
        .await;
    }
    assert!(routes.get_opt("checkout").await.unwrap().is_none());

    // The controller's Events say in which order it deleted them.
    let mut deleted: Vec<Event> = events(&client, &ns.name)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Deleted"))
        .collect();
    deleted.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    let order: Vec<String> = deleted.iter().filter_map(|e| e.note.clone()).collect();
    if let Err(e) = check_deletion_order(&order, &ns.name) {
        panic!("{e}");
    }
    assert!(reasons(&events(&client, &ns.name).await).contains(&"CleanedUp".to_string()));
    controller.stop().await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG, e.g. kind): cargo test -p splitscope-tests --test e2e -- --ignored"]
async fn orphan_policy_keeps_the_root_service_and_a_new_trafficsplit_adopts_it() {
    let client = cluster::client().await;
    install_crds();
    let ns = TestNamespace::create(&client, "orphan").await;
    let controller = RunningController::start(&ns.name);
    let mut object = example(&ns.name);
    object["spec"]["deletionPolicy"] = json!("Orphan");
    create_ts(&client, &ns.name, object.clone()).await.unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let routes: Api<HttpRoute> = Api::namespaced(client.clone(), &ns.name);
    eventually("the HTTPRoute", || async {
        routes.get_opt("checkout").await.ok().flatten()
    })
    .await;

    let api: Api<TrafficSplit> = Api::namespaced(client.clone(), &ns.name);
    delete_and_wait(&api, "checkout").await;
    for name in ["checkout-stable", "checkout-canary"] {
        eventually(&format!("Service {name} to be gone"), || async {
            matches!(services.get_opt(name).await, Ok(None)).then_some(())
        })
        .await;
    }
    assert!(routes.get_opt("checkout").await.unwrap().is_none());
    // The garbage collector had time to act on an ownerReference, had one been left.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let root = services
        .get("checkout")
        .await
        .expect("the root Service was deleted despite Orphan");
    assert!(
        root.owner_references().is_empty(),
        "{:?}",
        root.owner_references()
    );
    assert_eq!(root.labels()["splitscope.dev/traffic-split"], "checkout");
    assert!(reasons(&events(&client, &ns.name).await).contains(&"Orphaned".to_string()));

    // A new TrafficSplit of the same name adopts it.
    create_ts(&client, &ns.name, object).await.unwrap();
    let ts = eventually("the new TrafficSplit to be reconciled", || async {
        let ts = api.get("checkout").await.ok()?;
        ts.status.as_ref()?.phase.map(|_| ts)
    })
    .await;
    let uid = ts.uid().unwrap();
    eventually("the root Service to be adopted", || async {
        let svc = services.get("checkout").await.ok()?;
        controlled_by(&svc.metadata, &uid).then_some(())
    })
    .await;
    assert!(reasons(&events(&client, &ns.name).await).contains(&"Adopted".to_string()));
    controller.stop().await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG, e.g. kind): cargo test -p splitscope-tests --test e2e -- --ignored"]
async fn a_provider_whose_crds_are_missing_is_named_in_status_and_services_still_exist() {
    let client = cluster::client().await;
    install_crds();
    let istio_served = client
        .list_api_group_resources("networking.istio.io/v1")
        .await
        .map(|l| l.resources.iter().any(|r| r.name == "virtualservices"))
        .unwrap_or(false);
    let ns = TestNamespace::create(&client, "istio").await;
    let controller = RunningController::start(&ns.name);
    let mut object = example(&ns.name);
    object["spec"]["routing"] = json!({"provider": "Istio"});
    create_ts(&client, &ns.name, object).await.unwrap();
    let api: Api<TrafficSplit> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    for name in ["checkout", "checkout-stable", "checkout-canary"] {
        eventually(&format!("Service {name}"), || async {
            services.get_opt(name).await.ok().flatten()
        })
        .await;
    }
    if istio_served {
        // This cluster has Istio: the routing objects must exist instead.
        let vs: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns.name,
            &splitscope::controller::routing::istio::virtual_service_resource(),
        );
        let vs = eventually("the VirtualService", || async {
            vs.get_opt("checkout").await.ok().flatten()
        })
        .await;
        assert_eq!(vs.data["spec"]["http"][0]["route"][0]["weight"], 95);
    } else {
        let (_, _, message) = eventually("Ready=False RouteAPIUnavailable", || async {
            let ts = api.get("checkout").await.ok()?;
            condition(&ts, "Ready").filter(|c| c.1 == "RouteAPIUnavailable")
        })
        .await;
        assert!(message.contains("networking.istio.io/v1"), "{message}");
        assert!(reasons(&events(&client, &ns.name).await).contains(&"RouteAPIUnavailable".to_string()));
    }
    controller.stop().await;
}

/// A rollout on a real API server (real watches, real server-side apply with a resourceVersion
/// precondition on `/status`): the route steps 20 → 50, waits at `pause: {}`, is promoted
/// through `splitscope rollout promote` to 100, aborted and retried through the annotation, and
/// returns to the spec weights when `spec.rollout` goes. No analysis: the analysed path runs in
/// tests/rollout against a real Prometheus.
#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG, e.g. kind): cargo test -p splitscope-tests --test e2e -- --ignored"]
async fn a_rollout_steps_the_route_is_promoted_aborted_retried_and_removed() {
    use splitscope::cli::{PromoteArgs, RolloutArgs, RolloutCommand, RolloutTarget};

    let client = cluster::client().await;
    install_crds();
    let ns = TestNamespace::create(&client, "rollout").await;
    let controller = RunningController::start(&ns.name);
    let rollout = json!({
        "stable": "stable",
        "canary": "canary",
        "steps": [{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}],
    });
    create_rollout(&client, &ns.name, rollout, true).await;

    let api: Api<TrafficSplit> = Api::namespaced(client.clone(), &ns.name);
    let routes: Api<HttpRoute> = Api::namespaced(client.clone(), &ns.name);
    let rollout_is = |phase: &'static str, canary: i32| rollout_at(&api, phase, canary);
    let route_is = |stable: i32, canary: i32| route_at(&routes, stable, canary);

    let paused = eventually("the rollout to wait at 50% for a promotion", || {
        rollout_is("Paused", 50)
    })
    .await;
    assert_eq!(paused.step_index, 3);
    eventually("the route at 50/50", || route_is(50, 50)).await;
    let table = cluster::kubectl_get(&["get", "ts", "-n", &ns.name]);
    assert!(table.contains("ROLLOUT") && table.contains("CANARY"), "{table}");
    assert!(
        table.contains("Paused") && table.contains("stable=50,canary=50"),
        "{table}"
    );
    let stepped: Vec<String> = events(&client, &ns.name)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("WeightStepped"))
        .filter_map(|e| e.action)
        .collect();
    assert!(
        stepped.contains(&"SetWeight20".to_string()) && stepped.contains(&"SetWeight50".to_string()),
        "{stepped:?}"
    );

    // Promoted as a person would, waiting for the controller to take it.
    splitscope::rollout_command::run(RolloutArgs {
        command: RolloutCommand::Promote(PromoteArgs {
            target: RolloutTarget {
                name: "checkout".into(),
                namespace: Some(ns.name.clone()),
            },
            full: false,
            wait: Some(60),
        }),
    })
    .await
    .unwrap();
    eventually("the rollout to succeed at 100%", || rollout_is("Succeeded", 100)).await;
    eventually("the route at 0/100", || route_is(0, 100)).await;

    // Aborted and retried through the annotation, as `kubectl annotate` does.
    let annotate = |value: &'static str| {
        let api = api.clone();
        async move {
            let patch = json!({"metadata": {"annotations": {"splitscope.dev/rollout-action": value}}});
            api.patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    annotate("abort@e2e-1").await;
    eventually("the rollout to be aborted", || rollout_is("Aborted", 0)).await;
    eventually("the route back at 100/0", || route_is(100, 0)).await;
    annotate("retry@e2e-2").await;
    let again = eventually("the retried rollout to wait at 50% again", || {
        rollout_is("Paused", 50)
    })
    .await;
    assert_eq!(again.last_action.as_deref(), Some("retry@e2e-2"));

    // spec.rollout removed: the spec's weights, and no rollout in the status.
    let patch = json!({"spec": {"rollout": null}});
    api.patch("checkout", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("the route back at the spec's 100/0", || route_is(100, 0)).await;
    eventually("status.rollout to go", || async {
        let ts = api.get("checkout").await.ok()?;
        ts.status?.rollout.is_none().then_some(())
    })
    .await;
    controller.stop().await;
}

/// A canary that loses its pod mid-rollout gets 0 % while the rollout waits
/// (`CanaryUnavailable`); once `progressDeadline` has passed the rollout fails, with a
/// `RolledBack` warning naming the deadline, and a canary pod that comes back afterwards gets no
/// traffic (without the deadline it would get its step's 20 % again).
#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG, e.g. kind): cargo test -p splitscope-tests --test e2e -- --ignored"]
async fn a_canary_without_ready_pods_past_its_progress_deadline_is_rolled_back() {
    let client = cluster::client().await;
    install_crds();
    let ns = TestNamespace::create(&client, "deadline").await;
    let controller = RunningController::start(&ns.name);
    let rollout = json!({
        "stable": "stable",
        "canary": "canary",
        "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}],
        "progressDeadline": "10s",
    });
    create_rollout(&client, &ns.name, rollout, true).await;

    let api: Api<TrafficSplit> = Api::namespaced(client.clone(), &ns.name);
    let routes: Api<HttpRoute> = Api::namespaced(client.clone(), &ns.name);
    let route_is = |stable: i32, canary: i32| route_at(&routes, stable, canary);
    eventually("the rollout to wait at 20% for a promotion", || {
        rollout_at(&api, "Paused", 20)
    })
    .await;
    eventually("the route at 80/20", || route_is(80, 20)).await;

    // The canary's only pod goes: 0 % at once, Failed once it has been gone for 10s.
    delete_and_wait(&Api::<Pod>::namespaced(client.clone(), &ns.name), "canary-0").await;
    let failed = eventually("the rollout to fail on its progressDeadline", || async {
        let r = api.get("checkout").await.ok()?.status?.rollout?;
        (r.phase.as_str() == "Failed").then_some(r)
    })
    .await;
    assert_eq!((failed.canary_weight, failed.stable_weight), (0, 100));
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains("backend canary had no ready pod for 10s") && message.contains("progressDeadline"),
        "{message}"
    );
    assert_eq!(failed.canary_unavailable_since, None);
    eventually("the route at 100/0", || route_is(100, 0)).await;
    // Events are published after the status is written: wait for them too.
    let seen = eventually("a RolledBack warning naming the progressDeadline", || async {
        let seen = events(&client, &ns.name).await;
        seen.iter()
            .any(|e| {
                e.reason.as_deref() == Some("RolledBack")
                    && e.type_.as_deref() == Some("Warning")
                    && e.note.as_deref().is_some_and(|n| n.contains("progressDeadline"))
            })
            .then_some(seen)
    })
    .await;
    // Before that it waited at 0 %, with a warning saying why.
    assert!(
        seen.iter().any(|e| e.reason.as_deref() == Some("RolloutPaused")
            && e.type_.as_deref() == Some("Warning")
            && e.note.as_deref().is_some_and(|n| n.contains("has no ready pods"))),
        "{:?}",
        reasons(&seen)
    );

    // A canary pod again: the failed rollout keeps it at 0 %.
    pod(
        &client,
        &ns.name,
        "canary-1",
        &[("app", "checkout"), ("version", "v2")],
    )
    .await;
    let ts = eventually("the canary pod to be a ready endpoint", || async {
        let ts = api.get("checkout").await.ok()?;
        let ready = ts
            .status
            .as_ref()?
            .backends
            .iter()
            .any(|b| b.name == "canary" && b.ready_endpoints == 1);
        ready.then_some(ts)
    })
    .await;
    let rollout = ts.status.and_then(|s| s.rollout);
    assert_eq!(
        rollout.map(|r| (r.phase.as_str(), r.canary_weight)),
        Some(("Failed", 0))
    );
    eventually("the route still at 100/0", || route_is(100, 0)).await;
    controller.stop().await;
}
