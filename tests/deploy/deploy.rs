//! The deployment files agree with each other and with acr: the Kubernetes manifests and the
//! pipelines they mount (`lib/kubernetes`), the systemd unit (`lib/systemd/acr.service`) and
//! the `Dockerfile`.
//!
//! The manifests are read as YAML by python3-yaml (`scripts/deps.sh` installs it) and checked
//! as JSON: the pipelines in the ConfigMaps are the standalone `.runmd` files and acr compiles
//! them; containers, probes and the Service use the port of the pipeline's `+ .proxy`; every
//! mounted volume exists. Then the real acr runs the node agent's pipeline (hosts.toml for each
//! mirrored registry, probes, a graceful SIGTERM), and the node agent, two replicas of the
//! shared mirror and an S3 server (s3s-fs, in this process) serve a pull the way a cluster
//! would: containerd's request to the node agent, docker.io chained to the shared mirror, what
//! one replica fetched served by the other from the bucket; each acr runs as its pod runs it
//! (`deploy/pod.rs`: the pipeline read-only, the pod's user), and none writes beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;
use serde_json::Value;

mod manifests;
mod pod;
mod running;
mod units;

/// The image's default pipeline path, where the manifests mount the ConfigMaps.
const PIPELINE_MOUNT: &str = "/etc/acr";
/// acr's working directory in the image and in the pods, where it writes (the store's local
/// tier, the shared mirror's hosts.toml).
const STATE_DIR: &str = "/var/lib/acr";
/// How long acr gives transfers in progress on SIGTERM when `--shutdown-grace` is not given.
const DEFAULT_SHUTDOWN_GRACE_S: u64 = 30;

// ------------------------------------------------------------------------------------------
// reading the files

fn k8s_dir() -> PathBuf {
    repo_root().join("lib/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn python3() -> PathBuf {
    // Debian's python3 is the one python3-yaml installs into.
    let debian = Path::new("/usr/bin/python3");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

/// YAML to JSON, refusing duplicate keys (YAML takes the last one silently: a second `env:`
/// in a container would drop the first without a word).
const YAML_TO_JSON: &str = r#"
import json, sys, yaml

class Strict(yaml.SafeLoader):
    pass

def mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key %r" % (key,), key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)

Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
with open(sys.argv[1]) as f:
    docs = [d for d in yaml.load_all(f, Loader=Strict) if d is not None]
print(json.dumps(docs, default=str))
"#;

/// Every document of a YAML file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let mut cmd = Command::new(python3());
    cmd.arg("-c").arg(YAML_TO_JSON).arg(path);
    let out = run_cmd(cmd, Duration::from_secs(60));
    assert!(
        out.success(),
        "{} is not valid YAML (python3-yaml comes from scripts/deps.sh): {out:?}",
        path.display()
    );
    serde_json::from_str(&out.stdout).expect("the converter prints JSON")
}

/// The YAML files of lib/kubernetes.
fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("lib/kubernetes")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// The Kubernetes objects of the manifests (every YAML file but the kustomization).
struct Manifests {
    objects: Vec<(String, Value)>,
}

impl Manifests {
    fn load() -> Manifests {
        let mut objects = Vec::new();
        for path in yaml_files() {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if file == "kustomization.yaml" {
                continue;
            }
            for doc in yaml_docs(&path) {
                objects.push((file.clone(), doc));
            }
        }
        Manifests { objects }
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} in lib/kubernetes"))
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .map(|(_, o)| o)
            .filter(|o| o["kind"] == kind)
            .collect()
    }

    /// The Deployment and the DaemonSet.
    fn workloads(&self) -> Vec<&Value> {
        let mut w = self.of_kind("Deployment");
        w.extend(self.of_kind("DaemonSet"));
        assert!(!w.is_empty(), "no workload in lib/kubernetes");
        w
    }
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, found {v}"))
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn name_of(o: &Value) -> String {
    format!("{} {}", s(&o["kind"]), s(&o["metadata"]["name"]))
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// Init containers and containers.
fn all_containers(workload: &Value) -> Vec<&Value> {
    let spec = pod_spec(workload);
    arr(&spec["initContainers"])
        .iter()
        .chain(arr(&spec["containers"]))
        .collect()
}

/// The container that runs `acr ... mirror start`.
fn acr_container(workload: &Value) -> &Value {
    let found: Vec<&Value> = arr(&pod_spec(workload)["containers"])
        .iter()
        .filter(|c| args_of(c).iter().any(|a| a == "mirror"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{}: one container runs acr mirror start",
        name_of(workload)
    );
    found[0]
}

/// A container's command and args, as one list.
fn args_of(container: &Value) -> Vec<String> {
    arr(&container["command"])
        .iter()
        .chain(arr(&container["args"]))
        .map(|v| s(v).to_string())
        .collect()
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn mount_path<'a>(container: &'a Value, volume: &str) -> Option<&'a str> {
    arr(&container["volumeMounts"])
        .iter()
        .find(|m| m["name"] == volume)
        .map(|m| s(&m["mountPath"]))
}

fn volume<'a>(workload: &'a Value, name: &str) -> &'a Value {
    arr(&pod_spec(workload)["volumes"])
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{}: no volume {name}", name_of(workload)))
}

/// A named container port's number, or the number itself.
fn resolve_port(container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let name = s(port);
    arr(&container["ports"])
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}")) as u16
}

/// The pipeline a workload runs: acr's `--runmd-path` is `MOUNT/KEY` of a ConfigMap volume
/// that acr's container mounts read-only, and acr runs on it in place (no init container
/// copies it anywhere). Returns (ConfigMap name, key, text).
fn pipeline_of(m: &Manifests, workload: &Value) -> (String, String, String) {
    let who = name_of(workload);
    let acr = acr_container(workload);
    let args = args_of(acr);
    let runmd_path = flag_value(&args, "--runmd-path")
        .unwrap_or_else(|| panic!("{who}: acr has no --runmd-path"));
    assert!(
        arr(&pod_spec(workload)["initContainers"]).is_empty(),
        "{who}: acr runs on the ConfigMap itself; no init container copies it"
    );
    let (mount, key) = runmd_path
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{who}: --runmd-path {runmd_path} is not MOUNT/KEY"));
    let vm = arr(&acr["volumeMounts"])
        .iter()
        .find(|vm| vm["mountPath"] == mount)
        .unwrap_or_else(|| panic!("{who}: nothing is mounted at {mount}"));
    assert_eq!(
        vm["readOnly"], true,
        "{who}: the pipeline's volume is mounted read-only"
    );
    let cm = volume(workload, s(&vm["name"]))["configMap"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{who}: {mount} is not a ConfigMap volume"));
    let text = m.get("ConfigMap", cm)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {cm} has no key {key}"));
    (cm.to_string(), key.to_string(), text.to_string())
}

/// `acr --runmd-path FILE dump`, which must succeed.
fn dump(path: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_acr"));
    cmd.arg("--runmd-path").arg(path).arg("dump");
    let out = run_cmd(cmd, Duration::from_secs(60));
    assert!(
        out.success(),
        "acr does not accept {}: {out:?}",
        path.display()
    );
    out.stdout
}

/// What `acr dump` says of a pipeline with one proxy.
struct Dumped {
    /// `+ .proxy ADDR`
    proxy: String,
    /// The `.mirror` hosts, in order.
    mirrors: Vec<String>,
    /// The proxy's settings: `name value`, one pair per line of the pipeline.
    settings: Vec<(String, String)>,
}

impl Dumped {
    fn of(path: &Path) -> Dumped {
        let text = dump(path);
        let mirrors = text
            .lines()
            .find_map(|l| {
                let (_, rest) = l.trim().split_once(": mirror \"")?;
                Some(rest.trim_end_matches('"').to_string())
            })
            .unwrap_or_else(|| panic!("no .mirror call in {}:\n{text}", path.display()))
            .split(',')
            .map(|h| h.trim().to_string())
            .collect();
        let routes = text
            .split_once("Proxy routes:\n")
            .unwrap_or_else(|| panic!("no proxy in {}:\n{text}", path.display()))
            .1;
        let proxies: Vec<&str> = routes
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.contains(" (block "))
            .collect();
        assert_eq!(
            proxies.len(),
            1,
            "one `+ .proxy` in {}:\n{text}",
            path.display()
        );
        let proxy = proxies[0].split_whitespace().next().unwrap().to_string();
        let settings = routes
            .lines()
            .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
            .map(str::trim)
            .filter(|l| !l.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .flat_map(|l| {
                let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                // A setting written on several lines is dumped as `[one, two]`.
                let v = v.trim();
                let values: Vec<&str> = match v.strip_prefix('[').and_then(|v| v.strip_suffix(']'))
                {
                    Some(list) => list.split(", ").collect(),
                    None => vec![v],
                };
                values
                    .into_iter()
                    .map(|v| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        Dumped {
            proxy,
            mirrors,
            settings,
        }
    }

    fn setting(&self, name: &str) -> Vec<&str> {
        self.settings
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn port(&self) -> u16 {
        self.proxy
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.proxy))
    }

    fn loopback(&self) -> bool {
        self.proxy.starts_with("127.")
            || self.proxy.starts_with("localhost:")
            || self.proxy.starts_with("[::1]")
    }
}

/// The pipeline file beside the manifests that a ConfigMap key stands for.
fn standalone(key: &str) -> PathBuf {
    k8s_dir().join(key)
}

/// `--shutdown-grace`'s default from `acr mirror start --help`, when acr has the option.
fn shutdown_grace_s() -> u64 {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_acr"));
    cmd.args(["mirror", "start", "--help"]);
    let out = run_cmd(cmd, Duration::from_secs(60)).ok();
    out.stdout
        .split("--shutdown-grace")
        .nth(1)
        .and_then(|rest| rest.split("[default: ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE_S)
}
