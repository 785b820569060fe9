//! One table of good and bad TrafficSplits through all three validation layers: the generated
//! CRD's OpenAPI schema (after the API server's defaulting), its CEL rules (kube-cel), and the
//! controller's `validate()`. Each row says which layer of the API server holds the rule; the
//! test checks that exactly that layer rejects it, naming the field, and that the controller
//! rejects it too, naming the same field. Rows the API server cannot check at all say why, and
//! must pass the API server and fail in the controller.

use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::schema_check::{apply_defaults, check_cel, check_openapi};
use crate::controller::api::trafficsplit::TrafficSplit;
use crate::controller::api::validate::validate;

/// Where a rule is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// Nowhere: a valid object.
    None,
    /// The OpenAPI schema (type, range, length, pattern, list/map size).
    OpenApi,
    /// A CEL rule (`x-kubernetes-validations`).
    Cel,
    /// Only the controller: the API server cannot check it (the reason is in the row's name).
    ControllerOnly,
}

struct Row {
    name: &'static str,
    change: fn(&mut Value),
    layer: Layer,
    /// What the API server's message names (a prefix of, or the same as, `field`).
    api_field: &'static str,
    /// The field the controller names.
    field: &'static str,
}

fn row(
    name: &'static str,
    change: fn(&mut Value),
    layer: Layer,
    api_field: &'static str,
    field: &'static str,
) -> Row {
    Row {
        name,
        change,
        layer,
        api_field,
        field,
    }
}

fn valid(name: &'static str, change: fn(&mut Value)) -> Row {
    row(name, change, Layer::None, "", "")
}

fn example() -> Value {
    json!({
        "apiVersion": "splitscope.dev/v1alpha1",
        "kind": "TrafficSplit",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {
            "selector": {"app": "checkout"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            "backends": [
                {"name": "stable", "labels": {"version": "v1"}, "weight": 95},
                {"name": "canary", "labels": {"version": "v2"}, "weight": 5}
            ]
        }
    })
}

fn table() -> Vec<Row> {
    use Layer::*;
    vec![
        valid("the design's example", |_| {}),
        valid("an explicit service name", |o| {
            o["spec"]["service"] = json!("cart")
        }),
        valid("16 backends", |o| {
            o["spec"]["backends"] = Value::Array(
                (0..16)
                    .map(|i| json!({"name": format!("v{i}"), "labels": {"version": format!("v{i}")}, "weight": if i == 0 { 85 } else { 1 }}))
                    .collect(),
            )
        }),
        valid("a named target port", |o| {
            o["spec"]["ports"][0]["targetPort"] = json!("http")
        }),
        valid("a Gateway parent with hostnames", |o| {
            o["spec"]["routing"] = json!({
                "provider": "GatewayAPI",
                "parentRefs": [{"name": "public", "namespace": "infra", "sectionName": "https", "port": 443}],
                "hostnames": ["shop.example.com", "*.shop.example.com"]
            })
        }),
        valid("Istio with hostnames", |o| {
            o["spec"]["routing"] = json!({"provider": "Istio", "hostnames": ["shop.example.com"]})
        }),
        valid("a weight of 0", |o| {
            o["spec"]["backends"][0]["weight"] = json!(100);
            o["spec"]["backends"][1]["weight"] = json!(0);
        }),
        // OpenAPI schema.
        row(
            "a weight above 100",
            |o| {
                o["spec"]["backends"][0]["weight"] = json!(101);
                o["spec"]["backends"][1]["weight"] = json!(-1);
            },
            OpenApi,
            "spec.backends[0].weight",
            "spec.backends[0].weight",
        ),
        row(
            "port 0",
            |o| o["spec"]["ports"][0]["port"] = json!(0),
            OpenApi,
            "spec.ports[0].port",
            "spec.ports[0].port",
        ),
        row(
            "a service name that is no DNS-1035 label",
            |o| o["spec"]["service"] = json!("1checkout"),
            OpenApi,
            "spec.service",
            "spec.service",
        ),
        row(
            "a backend name that is no DNS label",
            |o| o["spec"]["backends"][1]["name"] = json!("Canary_1"),
            OpenApi,
            "spec.backends[1].name",
            "spec.backends[1].name",
        ),
        row(
            "a bad selector value",
            |o| o["spec"]["selector"]["app"] = json!("-checkout"),
            OpenApi,
            "spec.selector.app",
            "spec.selector.app",
        ),
        row(
            "an empty selector",
            |o| o["spec"]["selector"] = json!({}),
            OpenApi,
            "spec.selector",
            "spec.selector",
        ),
        row(
            "17 backends",
            |o| {
                o["spec"]["backends"] = Value::Array(
                (0..17)
                    .map(|i| json!({"name": format!("v{i}"), "labels": {"version": format!("v{i}")}, "weight": if i == 0 { 84 } else { 1 }}))
                    .collect(),
            )
            },
            OpenApi,
            "spec.backends",
            "spec.backends",
        ),
        row(
            "a hostname with a space",
            |o| o["spec"]["routing"] = json!({"hostnames": ["Bad Host"]}),
            OpenApi,
            "spec.routing.hostnames[0]",
            "spec.routing.hostnames[0]",
        ),
        row(
            "a parent kind starting with a digit",
            |o| o["spec"]["routing"] = json!({"parentRefs": [{"name": "gw", "kind": "9Gateway"}]}),
            OpenApi,
            "spec.routing.parentRefs[0].kind",
            "spec.routing.parentRefs[0].kind",
        ),
        row(
            "a parent group that is no DNS subdomain",
            |o| o["spec"]["routing"] = json!({"parentRefs": [{"name": "gw", "group": "Bad_Group"}]}),
            OpenApi,
            "spec.routing.parentRefs[0].group",
            "spec.routing.parentRefs[0].group",
        ),
        row(
            "a parent namespace in capitals",
            |o| o["spec"]["routing"] = json!({"parentRefs": [{"name": "gw", "namespace": "Infra"}]}),
            OpenApi,
            "spec.routing.parentRefs[0].namespace",
            "spec.routing.parentRefs[0].namespace",
        ),
        row(
            "a parent section name starting with '-'",
            |o| o["spec"]["routing"] = json!({"parentRefs": [{"name": "gw", "sectionName": "-x"}]}),
            OpenApi,
            "spec.routing.parentRefs[0].sectionName",
            "spec.routing.parentRefs[0].sectionName",
        ),
        row(
            "a parent port 0",
            |o| o["spec"]["routing"] = json!({"parentRefs": [{"name": "gw", "port": 0}]}),
            OpenApi,
            "spec.routing.parentRefs[0].port",
            "spec.routing.parentRefs[0].port",
        ),
        // CEL rules.
        row(
            "weights summing to 105",
            |o| o["spec"]["backends"][1]["weight"] = json!(10),
            Cel,
            "spec.backends",
            "spec.backends",
        ),
        row(
            "duplicate backend names",
            |o| o["spec"]["backends"][1]["name"] = json!("stable"),
            Cel,
            "spec.backends",
            "spec.backends[1].name",
        ),
        row(
            "parentRefs with Istio",
            |o| o["spec"]["routing"] = json!({"provider": "Istio", "parentRefs": [{"name": "gw"}]}),
            Cel,
            "spec.routing.parentRefs",
            "spec.routing.parentRefs",
        ),
        row(
            "hostnames without a provider",
            |o| o["spec"]["routing"] = json!({"provider": "None", "hostnames": ["shop.example.com"]}),
            Cel,
            "spec.routing.hostnames",
            "spec.routing.hostnames",
        ),
        row(
            "an unnamed second port",
            |o| o["spec"]["ports"] = json!([{"name": "http", "port": 80}, {"port": 81}]),
            Cel,
            "spec.ports",
            "spec.ports[1].name",
        ),
        row(
            "duplicate port names",
            |o| o["spec"]["ports"] = json!([{"name": "http", "port": 80}, {"name": "http", "port": 81}]),
            Cel,
            "spec.ports",
            "spec.ports[1].name",
        ),
        row(
            "a port/protocol pair twice",
            |o| o["spec"]["ports"] = json!([{"name": "http", "port": 80}, {"name": "admin", "port": 80}]),
            Cel,
            "spec.ports",
            "spec.ports[1].port",
        ),
        row(
            "a backend Service name over 63 characters",
            |o| o["spec"]["service"] = json!("s".repeat(58)),
            Cel,
            "spec.service",
            "spec.backends[0].name",
        ),
        row(
            "a backend Service name over 63 characters from metadata.name",
            |o| o["metadata"]["name"] = json!("n".repeat(58)),
            Cel,
            "metadata.name",
            "spec.backends[0].name",
        ),
        row(
            "metadata.name over 63 characters with spec.service set (it is a label value)",
            |o| {
                o["metadata"]["name"] = json!("n".repeat(64));
                o["spec"]["service"] = json!("checkout");
            },
            Cel,
            "metadata.name",
            "metadata.name",
        ),
        // What the API server cannot check.
        row(
            "a bad label key (map keys have no schema pattern; a CEL regex per key is too costly)",
            |o| o["spec"]["selector"]["bad key!"] = json!("x"),
            ControllerOnly,
            "",
            "spec.selector.bad key!",
        ),
        row(
            "metadata.name that is no DNS-1035 label (a CEL regex over metadata.name makes the API server refuse the CRD)",
            |o| o["metadata"]["name"] = json!("check.out"),
            ControllerOnly,
            "",
            "metadata.name",
        ),
        row(
            "backend labels contradicting the selector (no pod could match both)",
            |o| o["spec"]["backends"][1]["labels"]["app"] = json!("payments"),
            ControllerOnly,
            "",
            "spec.backends[1].labels.app",
        ),
        row(
            "a named target port that is no port name (int-or-string has no schema pattern)",
            |o| o["spec"]["ports"][0]["targetPort"] = json!("http-web-server-x"),
            ControllerOnly,
            "",
            "spec.ports[0].targetPort",
        ),
        // spec.rollout
        valid("a rollout with openErrors and a query", with_rollout),
        valid("a rollout without analysis", |o| {
            with_rollout(o);
            o["spec"]["rollout"].as_object_mut().unwrap().remove("analysis");
        }),
        row(
            "a setWeight above 100",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["steps"][0]["setWeight"] = json!(101);
            },
            OpenApi,
            "spec.rollout.steps[0].setWeight",
            "spec.rollout.steps[0].setWeight",
        ),
        valid("a rollout with a progressDeadline", |o| {
            with_rollout(o);
            o["spec"]["rollout"]["progressDeadline"] = json!("10m");
        }),
        row(
            "a progressDeadline of one day (not a Go duration)",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["progressDeadline"] = json!("1d");
            },
            OpenApi,
            "spec.rollout.progressDeadline",
            "spec.rollout.progressDeadline",
        ),
        row(
            "a progressDeadline under one second",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["progressDeadline"] = json!("900ms");
            },
            Cel,
            "spec.rollout.progressDeadline",
            "spec.rollout.progressDeadline",
        ),
        row(
            "a pause of one day (not a Go duration)",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["steps"][1]["pause"]["duration"] = json!("1d");
            },
            OpenApi,
            "spec.rollout.steps[1].pause.duration",
            "spec.rollout.steps[1].pause.duration",
        ),
        row(
            "33 steps",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["steps"] =
                    Value::Array((0..33).map(|_| json!({"setWeight": 10})).collect());
            },
            OpenApi,
            "spec.rollout.steps",
            "spec.rollout.steps",
        ),
        row(
            "an errno in lower case",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["analysis"]["metrics"][0]["openErrors"]["errnos"] = json!(["eacces"]);
            },
            OpenApi,
            "spec.rollout.analysis.metrics[0].openErrors.errnos[0]",
            "spec.rollout.analysis.metrics[0].openErrors.errnos[0]",
        ),
        row(
            "a maxIncrease above 1",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["analysis"]["metrics"][0]["openErrors"]["maxIncrease"] = json!(2);
            },
            OpenApi,
            "spec.rollout.analysis.metrics[0].openErrors.maxIncrease",
            "spec.rollout.analysis.metrics[0].openErrors.maxIncrease",
        ),
        row(
            "a Prometheus address without scheme",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["analysis"]["prometheus"] = json!({"address": "prometheus:9090"});
            },
            OpenApi,
            "spec.rollout.analysis.prometheus.address",
            "spec.rollout.analysis.prometheus.address",
        ),
        row(
            "a metric name that is no DNS label",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["analysis"]["metrics"][0]["name"] = json!("Open_Errors");
            },
            OpenApi,
            "spec.rollout.analysis.metrics[0].name",
            "spec.rollout.analysis.metrics[0].name",
        ),
        row(
            "a stable that names no backend",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["stable"] = json!("v1");
            },
            Cel,
            "spec.rollout.stable",
            "spec.rollout.stable",
        ),
        row(
            "the same backend as stable and canary",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["canary"] = json!("stable");
            },
            Cel,
            "spec.rollout",
            "spec.rollout",
        ),
        row(
            "a setWeight beyond the pair's share",
            |o| {
                with_rollout(o);
                o["spec"]["backends"] = json!([
                    {"name": "stable", "labels": {"version": "v1"}, "weight": 70},
                    {"name": "canary", "labels": {"version": "v2"}, "weight": 0},
                    {"name": "mirror", "labels": {"version": "v0"}, "weight": 30}
                ]);
                o["spec"]["rollout"]["steps"][0]["setWeight"] = json!(80);
            },
            Cel,
            "spec.rollout.steps",
            "spec.rollout.steps[0].setWeight",
        ),
        row(
            "a rollout with provider None",
            |o| {
                with_rollout(o);
                o["spec"]["routing"] = json!({"provider": "None"});
            },
            Cel,
            "spec.rollout",
            "spec.rollout",
        ),
        row(
            "a step with both setWeight and pause",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["steps"][0]["pause"] = json!({});
            },
            Cel,
            "spec.rollout.steps",
            "spec.rollout.steps[0]",
        ),
        row(
            "an interval under one second",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["analysis"]["interval"] = json!("500ms");
            },
            Cel,
            "spec.rollout.analysis.interval",
            "spec.rollout.analysis.interval",
        ),
        row(
            "two metrics of one name",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["analysis"]["metrics"][1]["name"] = json!("open-errors");
            },
            Cel,
            "spec.rollout.analysis.metrics",
            "spec.rollout.analysis.metrics[1].name",
        ),
        row(
            "a metric with both openErrors and a query",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["analysis"]["metrics"][0]["query"] = json!("sum(up)");
                o["spec"]["rollout"]["analysis"]["metrics"][0]["thresholdRange"] = json!({"max": 1});
            },
            Cel,
            "spec.rollout.analysis.metrics",
            "spec.rollout.analysis.metrics[0]",
        ),
        row(
            "a query without thresholdRange",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["analysis"]["metrics"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("thresholdRange");
            },
            Cel,
            "spec.rollout.analysis.metrics",
            "spec.rollout.analysis.metrics[1]",
        ),
        row(
            "a thresholdRange with min above max",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["analysis"]["metrics"][1]["thresholdRange"] =
                    json!({"min": 2, "max": 1});
            },
            Cel,
            "spec.rollout.analysis.metrics[].thresholdRange",
            "spec.rollout.analysis.metrics[1].thresholdRange",
        ),
        row(
            "an unknown template variable (RE2 cannot refuse unknown names, CEL has no regex replace)",
            |o| {
                with_rollout(o);
                o["spec"]["rollout"]["analysis"]["metrics"][1]["query"] =
                    json!("sum(x{pod=~\"{{ canaryPod }}\"})");
            },
            ControllerOnly,
            "",
            "spec.rollout.analysis.metrics[1].query",
        ),
    ]
}

/// The rollout, on the example's two backends (stable 100, canary 0).
fn with_rollout(o: &mut Value) {
    o["spec"]["backends"][0]["weight"] = json!(100);
    o["spec"]["backends"][1]["weight"] = json!(0);
    o["spec"]["rollout"] = json!({
        "stable": "stable",
        "canary": "canary",
        "steps": [
            {"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}
        ],
        "analysis": {
            "interval": "30s",
            "failureLimit": 1,
            "consecutiveErrorLimit": 3,
            "prometheus": {"address": "http://prometheus.monitoring:9090"},
            "metrics": [
                {"name": "open-errors", "openErrors": {"maxIncrease": 0.05, "errnos": ["EACCES", "EMFILE"]}},
                {"name": "http-5xx",
                 "query": "sum(rate(http_requests_total{namespace=\"{{ namespace }}\",pod=~\"{{ canaryPods }}\",code=~\"5..\"}[{{ interval }}]))",
                 "thresholdRange": {"max": 0.5}}
            ]
        }
    });
}

#[test]
fn the_schema_its_cel_rules_and_the_controller_agree_on_every_row() {
    let crd = serde_json::to_value(TrafficSplit::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut problems = Vec::new();
    for Row {
        name,
        change,
        layer,
        api_field,
        field,
    } in table()
    {
        let mut object = example();
        change(&mut object);
        apply_defaults(schema, &mut object);
        let openapi: Vec<String> = check_openapi(schema, &object)
            .into_iter()
            .map(|e| e.trim_start_matches('.').to_owned())
            .collect();
        let cel = check_cel(schema, &object);
        let controller: Vec<String> = match serde_json::from_value::<TrafficSplit>(object.clone()) {
            Ok(ts) => validate(&ts)
                .err()
                .map(|e| e.0.into_iter().map(|f| f.field).collect())
                .unwrap_or_default(),
            Err(e) => vec![format!("does not deserialize: {e}")],
        };
        let names = |errors: &[String]| {
            errors.iter().any(|e| {
                e.starts_with(api_field)
                    || e.contains(&format!("{api_field}:"))
                    || e.contains(&format!(" {api_field} "))
            })
        };
        let mut fail = |what: String| problems.push(format!("{name}: {what}"));
        match layer {
            Layer::OpenApi if !names(&openapi) => fail(format!(
                "the schema does not reject it naming {api_field}: {openapi:?}"
            )),
            Layer::Cel if !names(&cel) => fail(format!("no CEL rule rejects it naming {api_field}: {cel:?}")),
            _ => {}
        }
        if layer != Layer::OpenApi && !openapi.is_empty() {
            fail(format!(
                "the schema rejects it, the table says it should not: {openapi:?}"
            ));
        }
        if layer != Layer::Cel && !cel.is_empty() && layer != Layer::OpenApi {
            fail(format!(
                "a CEL rule rejects it, the table says it should not: {cel:?}"
            ));
        }
        match layer {
            Layer::None if !controller.is_empty() => {
                fail(format!("the controller rejects it: {controller:?}"))
            }
            Layer::None => {}
            _ if !controller.iter().any(|f| f == field) => fail(format!(
                "the controller does not reject it naming {field}: {controller:?}"
            )),
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

mod any_spec {
    //! Random TrafficSplits assembled from valid and invalid pieces (backends, weights, routing,
    //! rollout steps, durations, analysis): the API server's layers (schema after defaulting,
    //! CEL) accept exactly what the controller accepts. The controller-only rules (label keys,
    //! names, template variables, targetPort names) are left out of the pieces: the table
    //! covers them.

    use proptest::prelude::*;

    use super::*;

    fn name() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("stable"), Just("canary"), Just("b3"), Just("Bad_Name")]
    }

    fn backend() -> impl Strategy<Value = Value> {
        (
            name(),
            prop_oneof![Just("v1"), Just("v2"), Just("v3")],
            prop_oneof![4 => 0i32..50, 1 => prop_oneof![Just(-5), Just(101)]],
        )
            .prop_map(|(name, version, weight)| json!({"name": name, "labels": {"version": version}, "weight": weight}))
    }

    /// Valid pieces are drawn more often than invalid ones, so that whole valid rollouts occur
    /// and each invalid piece is often the only one.
    fn duration() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            4 => prop_oneof![Just("1m"), Just("30s"), Just("1h30m"), Just("1.5h"), Just("2s")],
            1 => prop_oneof![Just("500ms"), Just("0s"), Just("1d"), Just("")],
        ]
    }

    fn step() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => prop_oneof![Just(0), Just(5), Just(10)].prop_map(|w| json!({"setWeight": w})),
            1 => prop_oneof![Just(-1), Just(60), Just(101)].prop_map(|w| json!({"setWeight": w})),
            2 => duration().prop_map(|d| json!({"pause": {"duration": d}})),
            1 => Just(json!({"pause": {}})),
            1 => prop_oneof![Just(json!({"setWeight": 10, "pause": {}})), Just(json!({}))],
        ]
    }

    fn metric(i: usize) -> impl Strategy<Value = Value> {
        let name = ["m0", "m1", "m2"][i];
        prop_oneof![
            3 => (0.0f64..1.0).prop_map(move |m| json!({"name": name, "openErrors": {"maxIncrease": m}})),
            3 => Just(json!({"name": name, "query": "sum(x)", "thresholdRange": {"max": 1}})),
            1 => Just(json!({"name": name, "openErrors": {"maxIncrease": 0.1, "errnos": ["EACCES", "ENOENT"]}})),
            1 => prop_oneof![
                Just(json!({"name": name, "openErrors": {"maxIncrease": 1.5}})),
                Just(json!({"name": name, "openErrors": {"maxIncrease": 0.1, "errnos": ["enoent"]}})),
                Just(json!({"name": name, "query": "sum(x)", "thresholdRange": {"min": 2, "max": 1}})),
                Just(json!({"name": name, "query": "sum(x)"})),
                Just(json!({"name": name, "query": "sum(x)", "thresholdRange": {"max": 1}, "openErrors": {"maxIncrease": 0.1}})),
                Just(json!({"name": "m0", "query": "sum(x)", "thresholdRange": {"max": 1}})),
                Just(json!({"name": "Bad_Name", "query": "sum(x)", "thresholdRange": {"max": 1}})),
            ],
        ]
    }

    fn analysis() -> impl Strategy<Value = Value> {
        (
            duration(),
            prop_oneof![4 => 0i32..3, 1 => Just(-1)],
            (
                metric(0),
                metric(1),
                metric(2),
                prop_oneof![6 => 1usize..4, 1 => Just(0)],
            ),
        )
            .prop_map(|(interval, limit, (m0, m1, m2, n))| {
                let metrics: Vec<Value> = [m0, m1, m2].into_iter().take(n).collect();
                json!({"interval": interval, "failureLimit": limit, "metrics": metrics})
            })
    }

    fn rollout() -> impl Strategy<Value = Value> {
        (
            prop_oneof![4 => Just("stable"), 1 => name()],
            prop_oneof![4 => Just("canary"), 1 => name()],
            prop_oneof![6 => prop::collection::vec(step(), 1..4), 1 => Just(Vec::new())],
            prop::option::of(duration()),
            prop::option::of(analysis()),
        )
            .prop_map(|(stable, canary, steps, deadline, analysis)| {
                let mut r = json!({"stable": stable, "canary": canary, "steps": steps});
                if let Some(d) = deadline {
                    r["progressDeadline"] = json!(d);
                }
                if let Some(a) = analysis {
                    r["analysis"] = a;
                }
                r
            })
    }

    fn spec() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec(backend(), 1..4),
            prop_oneof![3 => Just("GatewayAPI"), 3 => Just("Istio"), 1 => Just("None")],
            any::<bool>(),
            prop::option::of(rollout()),
            prop::bool::weighted(0.8),
        )
            .prop_map(|(mut backends, provider, parent, rollout, tidy)| {
                // Mostly unique names and weights that sum to 100, so that the rules behind
                // those are reached too.
                if tidy {
                    for (b, name) in backends.iter_mut().zip(["stable", "canary", "b3"]) {
                        b["name"] = json!(name);
                    }
                    let others: i64 = backends.iter().skip(1).filter_map(|b| b["weight"].as_i64()).sum();
                    backends[0]["weight"] = json!((100 - others).clamp(0, 100));
                }
                let mut o = example();
                o["spec"]["backends"] = json!(backends);
                o["spec"]["routing"] = json!({"provider": provider});
                if parent {
                    o["spec"]["routing"]["parentRefs"] = json!([{"name": "gw"}]);
                }
                if let Some(r) = rollout {
                    o["spec"]["rollout"] = r;
                }
                o
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_api_server_and_the_controller_accept_the_same_specs(mut object in spec()) {
            let crd = serde_json::to_value(TrafficSplit::crd()).unwrap();
            let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            apply_defaults(schema, &mut object);
            let openapi = check_openapi(schema, &object);
            let cel = if openapi.is_empty() { check_cel(schema, &object) } else { Vec::new() };
            let api_accepts = openapi.is_empty() && cel.is_empty();
            let controller = serde_json::from_value::<TrafficSplit>(object.clone())
                .map_err(|e| vec![format!("does not deserialize: {e}")])
                .and_then(|ts| validate(&ts).map_err(|e| e.0.into_iter().map(|f| format!("{}: {}", f.field, f.message)).collect()));
            prop_assert_eq!(
                api_accepts,
                controller.is_ok(),
                "schema {:?}, CEL {:?}, controller {:?} for {}",
                openapi, cel, controller.err(), object["spec"]
            );
        }
    }
}
