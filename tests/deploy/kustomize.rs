//! Rendering: `kubectl kustomize` on a directory, parsed into one JSON value per object.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Every kustomization under deploy/, relative to the repository root. The tests render each one;
/// `every_kustomization_is_listed` fails when a new one is added without being listed here.
pub const KUSTOMIZATIONS: &[&str] = &[
    "deploy/crds",
    "deploy/rbac",
    "deploy/controller",
    "deploy/agent",
    "deploy/default",
    "deploy/grafana",
    "deploy/monitoring",
    "deploy/prometheus-grafana",
];

pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf()
}

/// One rendered object, with the text kubectl printed for the whole kustomization.
pub struct Rendered {
    pub dir: String,
    pub text: String,
    pub objects: Vec<Value>,
}

impl Rendered {
    pub fn find(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.dir))
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }
}

/// Renders `dir` (relative to the repository root) with `kubectl kustomize`.
pub fn render(dir: &str) -> Rendered {
    let path = repo_root().join(dir);
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `kubectl kustomize {dir}`: {e}. The deploy tests render the manifests \
                 with kubectl (>= 1.27, kustomize v5); install kubectl and put it on PATH"
            )
        });
    assert!(
        output.status.success(),
        "`kubectl kustomize {dir}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kubectl prints UTF-8");
    let objects = parse_yaml_stream(&text).unwrap_or_else(|e| panic!("{dir}: {e}"));
    assert!(!objects.is_empty(), "{dir} renders no objects");
    Rendered {
        dir: dir.to_owned(),
        text,
        objects,
    }
}

/// Every document of a multi-document YAML stream, as JSON values (empty documents skipped).
pub fn parse_yaml_stream(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| format!("YAML document {i} does not parse: {e}"))?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

pub fn read_yaml_file(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_yaml_stream(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_kustomization_renders() {
    for dir in KUSTOMIZATIONS {
        let rendered = render(dir);
        for object in &rendered.objects {
            assert!(
                object["apiVersion"].is_string() && object["kind"].is_string(),
                "{dir}: object without apiVersion/kind: {object}"
            );
            assert!(
                object["metadata"]["name"].is_string(),
                "{dir}: object without a name: {object}"
            );
        }
    }
}

#[test]
fn every_kustomization_is_listed() {
    let mut found = Vec::new();
    collect_kustomizations(&repo_root().join("deploy"), &mut found);
    let root = repo_root();
    let mut found: Vec<String> = found
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    found.sort();
    let mut listed: Vec<String> = KUSTOMIZATIONS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "deploy/ kustomizations vs KUSTOMIZATIONS");
}

fn collect_kustomizations(dir: &Path, out: &mut Vec<PathBuf>) {
    if KUSTOMIZATION_FILE_NAMES.iter().any(|n| dir.join(n).is_file()) {
        out.push(dir.to_path_buf());
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_kustomizations(&path, out);
        }
    }
}

#[test]
fn default_installs_everything_in_splitscope_system() {
    let default = render("deploy/default");
    let kinds: Vec<(String, String)> = default
        .objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_owned(),
                o["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (kind, name) in [
        ("Namespace", "splitscope-system"),
        ("CustomResourceDefinition", "trafficsplits.splitscope.dev"),
        ("ServiceAccount", "splitscope-controller"),
        ("ServiceAccount", "splitscope-agent"),
        ("Deployment", "splitscope-controller"),
        ("DaemonSet", "splitscope-agent"),
        ("Service", "splitscope-controller-metrics"),
        ("Service", "splitscope-agent-metrics"),
    ] {
        assert!(
            kinds.contains(&(kind.to_owned(), name.to_owned())),
            "deploy/default lacks {kind} {name}; has {kinds:?}"
        );
    }
    for object in &default.objects {
        let kind = object["kind"].as_str().unwrap();
        let namespaced = !matches!(
            kind,
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        if namespaced {
            assert_eq!(
                object["metadata"]["namespace"], "splitscope-system",
                "{kind} {} is not in splitscope-system",
                object["metadata"]["name"]
            );
        } else {
            assert!(
                object["metadata"]["namespace"].is_null(),
                "cluster-scoped {kind} has a namespace"
            );
        }
    }
}

/// kubectl reads YAML 1.1, where an unquoted `on`, `off`, `yes` or `no` is a boolean: an env var
/// value `on` would be rejected by the API server as a bool. serde_yaml (YAML 1.2) reads them as
/// strings, so the strict parse cannot catch it; this does.
#[test]
fn no_yaml_1_1_booleans_in_disguise() {
    for dir in KUSTOMIZATIONS {
        let rendered = render(dir);
        let bad = yaml11_bool_lines(&rendered.text);
        assert!(bad.is_empty(), "{dir}: quote these values: {bad:?}");
    }
    let examples = repo_root().join("examples");
    for path in crate::examples::yaml_files(&examples) {
        let text = std::fs::read_to_string(&path).unwrap();
        let bad = yaml11_bool_lines(&text);
        assert!(bad.is_empty(), "{}: quote these values: {bad:?}", path.display());
    }
}

fn yaml11_bool_lines(text: &str) -> Vec<String> {
    const WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off"];
    text.lines()
        .filter(|line| {
            let value = match line.split_once(": ") {
                Some((_, v)) => v,
                None => match line.trim_start().strip_prefix("- ") {
                    Some(v) => v,
                    None => return false,
                },
            };
            WORDS.contains(&value.trim().to_ascii_lowercase().as_str())
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn yaml11_lint_finds_unquoted_on() {
    assert_eq!(
        yaml11_bool_lines("env:\n  - name: X\n    value: on\n    other: \"on\"\n  - off\n"),
        vec!["    value: on".to_owned(), "  - off".to_owned()]
    );
}

/// The names kustomize looks for in a directory.
const KUSTOMIZATION_FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// crds/Kustomization must list exactly the CRD files `cargo xtask gen-crds` writes, and every
/// file `kubectl apply -f crds/` reads (.yaml, .yml, .json) must hold CRDs only — the README and
/// the e2e tests install them that way.
#[test]
fn crds_kustomization_lists_every_crd_file() {
    let dir = repo_root().join("crds");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json"))
        .collect();
    files.sort();
    for file in &files {
        for doc in read_yaml_file(&dir.join(file)) {
            assert_eq!(
                doc["kind"], "CustomResourceDefinition",
                "crds/{file}: `kubectl apply -f crds/` would read a {} here",
                doc["kind"]
            );
        }
    }
    let kustomization = &read_yaml_file(&dir.join("Kustomization"))[0];
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("crds/Kustomization has resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert!(
        !files.is_empty(),
        "crds/ holds no CRD YAML: run `cargo xtask gen-crds` (deploy/default installs crds/)"
    );
    assert_eq!(
        listed, files,
        "crds/Kustomization resources vs the CRD files in crds/"
    );
}

/// The CRD deploy/default installs is the one RBAC and the examples refer to.
#[test]
fn installed_crd_is_trafficsplit_v1alpha1() {
    let crds = render("deploy/crds");
    let crd = crds.find("CustomResourceDefinition", "trafficsplits.splitscope.dev");
    assert_eq!(crd["spec"]["group"], "splitscope.dev");
    assert_eq!(crd["spec"]["names"]["kind"], "TrafficSplit");
    assert_eq!(crd["spec"]["names"]["plural"], "trafficsplits");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let versions = crd["spec"]["versions"].as_array().unwrap();
    let v1alpha1 = versions
        .iter()
        .find(|v| v["name"] == "v1alpha1")
        .expect("CRD serves v1alpha1");
    assert_eq!(v1alpha1["served"], true);
    assert!(
        v1alpha1["subresources"]["status"].is_object(),
        "the controller writes .status through /status (RBAC grants trafficsplits/status)"
    );
}
