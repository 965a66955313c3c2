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
//! one replica fetched served by the other from the bucket.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

/// The image's default pipeline path, where the manifests mount the ConfigMaps.
const PIPELINE_MOUNT: &str = "/etc/acr";
/// acr's working directory in the image and in the pods: the pipeline's copy and the store.
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
        self.objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in lib/kubernetes"))
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

/// The pipeline a workload runs: its init container copies `MOUNT/KEY` of the ConfigMap
/// volume to the path acr's `--runmd-path` names. Returns (ConfigMap name, key, text).
fn pipeline_of(m: &Manifests, workload: &Value) -> (String, String, String) {
    let who = name_of(workload);
    let acr = acr_container(workload);
    let args = args_of(acr);
    let runmd_path = flag_value(&args, "--runmd-path")
        .unwrap_or_else(|| panic!("{who}: acr has no --runmd-path"));
    assert!(
        runmd_path.starts_with(&format!("{STATE_DIR}/")),
        "{who}: acr runs on a copy in {STATE_DIR}, not {runmd_path}"
    );
    let copies: Vec<&Value> = arr(&pod_spec(workload)["initContainers"])
        .iter()
        .filter(|c| {
            let a = args_of(c);
            a.len() == 3 && a[0] == "cp" && a[2] == runmd_path
        })
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "{who}: one init container copies the pipeline to {runmd_path}"
    );
    let copy = copies[0];
    let source = args_of(copy)[1].clone();
    // The copy lands in the volume acr runs in.
    let state = arr(&copy["volumeMounts"])
        .iter()
        .find(|vm| runmd_path.starts_with(&format!("{}/", s(&vm["mountPath"]))))
        .unwrap_or_else(|| panic!("{who}: the copy's destination is not on a volume"));
    assert_eq!(
        mount_path(acr, s(&state["name"])),
        Some(s(&state["mountPath"])),
        "{who}: acr sees the copy where the init container wrote it"
    );
    for (cm_volume, cm) in arr(&pod_spec(workload)["volumes"]).iter().filter_map(|v| {
        v["configMap"]["name"]
            .as_str()
            .map(|cm| (s(&v["name"]), cm))
    }) {
        let Some(mount) = mount_path(copy, cm_volume) else {
            continue;
        };
        if let Some(key) = source.strip_prefix(&format!("{mount}/")) {
            let map = m.get("ConfigMap", cm);
            let text = map["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("ConfigMap {cm} has no key {key}"));
            return (cm.to_string(), key.to_string(), text.to_string());
        }
    }
    panic!("{who}: the pipeline's copy comes from no ConfigMap volume ({source})");
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
    /// The proxy's settings: `name value`.
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
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                (k.to_string(), v.trim().to_string())
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

// ------------------------------------------------------------------------------------------
// the manifests

#[test]
fn every_manifest_parses_and_the_kustomization_names_them_all() {
    let files = yaml_files();
    let names: BTreeSet<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "namespace.yaml",
        "mirror.yaml",
        "node-agent.yaml",
        "kustomization.yaml",
    ] {
        assert!(names.contains(want), "lib/kubernetes/{want} is missing");
    }
    let m = Manifests::load();
    let namespace = m.of_kind("Namespace");
    assert_eq!(namespace.len(), 1, "one Namespace");
    let ns = s(&namespace[0]["metadata"]["name"]);
    for (file, o) in &m.objects {
        assert!(
            o["apiVersion"].is_string(),
            "{file}: a document without apiVersion: {o}"
        );
        assert!(
            o["metadata"]["name"].is_string(),
            "{file}: a document without a name: {o}"
        );
        if o["kind"] != "Namespace" {
            assert_eq!(
                o["metadata"]["namespace"],
                ns,
                "{file}: {} is not in {ns}",
                name_of(o)
            );
        }
    }
    // Names are unique per kind.
    let mut seen = BTreeSet::new();
    for (file, o) in &m.objects {
        assert!(seen.insert(name_of(o)), "{file}: {} twice", name_of(o));
    }

    let k = &yaml_docs(&k8s_dir().join("kustomization.yaml"))[0];
    assert_eq!(k["kind"], "Kustomization");
    assert_eq!(k["namespace"], ns);
    let resources: BTreeSet<String> = arr(&k["resources"])
        .iter()
        .map(|r| s(r).to_string())
        .collect();
    let expected: BTreeSet<String> = names
        .iter()
        .filter(|n| *n != "kustomization.yaml")
        .cloned()
        .collect();
    assert_eq!(
        resources, expected,
        "kustomization.yaml names every manifest"
    );
    // Its image override names the image the workloads use.
    let image = s(&all_containers(m.workloads()[0])[0]["image"]).to_string();
    let image_name = image.rsplit_once(':').map_or(image.as_str(), |(n, _)| n);
    assert!(
        arr(&k["images"]).iter().any(|i| i["name"] == image_name),
        "kustomization.yaml `images:` overrides {image_name}"
    );
}

/// `kubectl kustomize` (where kubectl is installed) renders the tree, with every object in the
/// namespace and every acr container on the image the kustomization names.
#[test]
fn kustomize_renders_the_tree_where_kubectl_is_installed() {
    let Some(kubectl) = which("kubectl") else {
        println!("kubectl is not installed: kustomize rendering not checked");
        return;
    };
    let mut cmd = Command::new(kubectl);
    cmd.arg("kustomize").arg(k8s_dir());
    let out = run_cmd(cmd, Duration::from_secs(120));
    assert!(out.success(), "kubectl kustomize lib/kubernetes: {out:?}");
    let rendered = temp_dir("acr-kustomize-");
    let path = rendered.path().join("rendered.yaml");
    std::fs::write(&path, &out.stdout).expect("write");
    let docs = yaml_docs(&path);
    let k = &yaml_docs(&k8s_dir().join("kustomization.yaml"))[0];
    let override_ = &arr(&k["images"])[0];
    let want = format!("{}:{}", s(&override_["newName"]), s(&override_["newTag"]));
    let mut workloads = 0;
    for o in &docs {
        if o["kind"] == "Deployment" || o["kind"] == "DaemonSet" {
            workloads += 1;
            for c in all_containers(o) {
                assert_eq!(s(&c["image"]), want, "{} after kustomize", name_of(o));
            }
        }
    }
    assert_eq!(workloads, 2);
}

#[test]
fn the_configmaps_hold_the_standalone_pipelines_and_acr_compiles_them() {
    let m = Manifests::load();
    let maps = m.of_kind("ConfigMap");
    assert!(
        maps.len() >= 2,
        "a pipeline ConfigMap for the mirror and the node agent"
    );
    for map in maps {
        for (key, text) in map["data"].as_object().expect("data") {
            let file = standalone(key);
            assert!(
                file.exists(),
                "ConfigMap {} holds {key}, but lib/kubernetes/{key} does not exist",
                s(&map["metadata"]["name"])
            );
            let standalone_text = read(&file);
            assert!(
                s(text) == standalone_text,
                "ConfigMap {}'s {key} differs from lib/kubernetes/{key}: keep them identical",
                s(&map["metadata"]["name"])
            );
            dump(&file);
        }
    }
    // The ConfigMap text itself, written out, compiles too (the same bytes, but this is what
    // the pods get).
    let dir = temp_dir("acr-configmap-");
    for w in m.workloads() {
        let (_, key, text) = pipeline_of(&m, w);
        let p = dir.path().join(&key);
        std::fs::write(&p, &text).expect("write");
        dump(&p);
    }
}

/// A changed pipeline must roll the pods (each runs on a copy made when it started): the pod
/// template carries the pipeline's sha256.
#[test]
fn each_pod_template_carries_the_sha256_of_its_pipeline() {
    let m = Manifests::load();
    for w in m.workloads() {
        let (cm, key, text) = pipeline_of(&m, w);
        let annotation =
            &w["spec"]["template"]["metadata"]["annotations"]["acr.io/pipeline-sha256"];
        assert_eq!(
            annotation.as_str(),
            Some(sha256_hex(text.as_bytes()).as_str()),
            "{}: set acr.io/pipeline-sha256 to `sha256sum lib/kubernetes/{key}` (ConfigMap {cm})",
            name_of(w)
        );
    }
}

#[test]
fn workloads_share_one_image_and_serve_the_port_of_their_pipeline() {
    let m = Manifests::load();
    let mut images = BTreeSet::new();
    for w in m.workloads() {
        let who = name_of(w);
        for c in all_containers(w) {
            images.insert(s(&c["image"]).to_string());
        }
        let (_, key, _) = pipeline_of(&m, w);
        let pipeline = Dumped::of(&standalone(&key));
        let port = pipeline.port();
        let acr = acr_container(w);
        let http: Vec<&Value> = arr(&acr["ports"])
            .iter()
            .filter(|p| p["name"] == "http")
            .collect();
        assert_eq!(http.len(), 1, "{who}: one container port named http");
        assert_eq!(
            http[0]["containerPort"].as_u64(),
            Some(u64::from(port)),
            "{who}: the container port is the pipeline's `+ .proxy {}`",
            pipeline.proxy
        );
        assert_eq!(
            acr["workingDir"], STATE_DIR,
            "{who}: acr runs in {STATE_DIR}"
        );

        // Probes: liveness /healthz, readiness /readyz, on the proxy's port.
        let probes = [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ];
        for (probe, path) in probes {
            let p = &acr[probe];
            if probe == "startupProbe" && p.is_null() {
                continue;
            }
            let get = &p["httpGet"];
            assert_eq!(get["path"], path, "{who}: {probe}");
            assert_eq!(resolve_port(acr, &get["port"]), port, "{who}: {probe} port");
            // A loopback proxy is reached from the node's network only, where the kubelet
            // probes from: hostNetwork and probes on 127.0.0.1. Otherwise the pod IP.
            if pipeline.loopback() {
                assert_eq!(
                    pod_spec(w)["hostNetwork"],
                    true,
                    "{who}: a loopback proxy needs hostNetwork"
                );
                assert_eq!(
                    get["host"], "127.0.0.1",
                    "{who}: {probe} must ask 127.0.0.1"
                );
            } else {
                assert!(get["host"].is_null(), "{who}: {probe} asks the pod IP");
                assert!(
                    pipeline.proxy.starts_with("0.0.0.0:") || pipeline.proxy.starts_with("[::]:"),
                    "{who}: `+ .proxy {}` is not reachable from the pod network",
                    pipeline.proxy
                );
            }
        }
        // /readyz tries each upstream for up to 3 s: a probe timeout under that fails pods
        // that are ready.
        let readiness_timeout = acr["readinessProbe"]["timeoutSeconds"]
            .as_u64()
            .unwrap_or(1);
        assert!(
            readiness_timeout > 3,
            "{who}: readinessProbe.timeoutSeconds {readiness_timeout}"
        );

        // Graceful stop: preStop pause + acr's grace for transfers + margin.
        let grace = pod_spec(w)["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        let pre_stop = arr(&acr["lifecycle"]["preStop"]["exec"]["command"])
            .iter()
            .map(|v| s(v).to_string())
            .collect::<Vec<_>>();
        let pause = match pre_stop.as_slice() {
            [sleep, n] if sleep == "sleep" => n.parse::<u64>().expect("sleep seconds"),
            [] => 0,
            other => panic!("{who}: unexpected preStop {other:?}"),
        };
        assert!(
            grace >= pause + shutdown_grace_s() + 5 && grace >= 40,
            "{who}: terminationGracePeriodSeconds {grace} leaves acr no time to finish transfers"
        );

        // Every mount names a volume; every volume is mounted.
        let volumes: BTreeSet<&str> = arr(&pod_spec(w)["volumes"])
            .iter()
            .map(|v| s(&v["name"]))
            .collect();
        let mut mounted = BTreeSet::new();
        for c in all_containers(w) {
            for vm in arr(&c["volumeMounts"]) {
                let name = s(&vm["name"]);
                assert!(
                    volumes.contains(name),
                    "{who}: container {} mounts a volume {name} that does not exist",
                    s(&c["name"])
                );
                mounted.insert(name);
            }
        }
        assert_eq!(mounted, volumes, "{who}: every volume is mounted");

        // Hardening of every container.
        for c in all_containers(w) {
            let sc = &c["securityContext"];
            let cname = s(&c["name"]);
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{who}/{cname}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{who}/{cname}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{who}/{cname}"
            );
            assert!(
                sc["capabilities"]["add"].is_null(),
                "{who}/{cname} adds capabilities"
            );
            assert!(
                sc["privileged"].is_null() || sc["privileged"] == false,
                "{who}/{cname}"
            );
            assert!(
                !c["resources"]["requests"].is_null(),
                "{who}/{cname}: resource requests"
            );
            assert!(
                !c["resources"]["limits"]["memory"].is_null(),
                "{who}/{cname}: a memory limit"
            );
        }
        assert_eq!(
            pod_spec(w)["automountServiceAccountToken"],
            false,
            "{who}: acr needs no API token"
        );

        // Upstream credentials: DOCKER_CONFIG names the mounted dockerconfigjson Secret.
        let env: BTreeMap<&str, &str> = arr(&acr["env"])
            .iter()
            .filter_map(|e| Some((s(&e["name"]), e["value"].as_str()?)))
            .collect();
        let docker_config = env
            .get("DOCKER_CONFIG")
            .unwrap_or_else(|| panic!("{who}: no DOCKER_CONFIG"));
        let creds_mount = arr(&acr["volumeMounts"])
            .iter()
            .find(|vm| vm["mountPath"] == *docker_config)
            .unwrap_or_else(|| {
                panic!("{who}: nothing is mounted at DOCKER_CONFIG={docker_config}")
            });
        let creds = &volume(w, s(&creds_mount["name"]))["secret"];
        let secret = m.get("Secret", s(&creds["secretName"]));
        assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
        assert!(
            arr(&creds["items"])
                .iter()
                .any(|i| i["key"] == ".dockerconfigjson" && i["path"] == "config.json"),
            "{who}: the Secret's .dockerconfigjson must appear as $DOCKER_CONFIG/config.json"
        );
        let placeholder: Value =
            serde_json::from_str(s(&secret["stringData"][".dockerconfigjson"]))
                .expect("config.json is JSON");
        assert!(placeholder["auths"].is_object());
    }
    assert_eq!(
        images.len(),
        1,
        "every acr container names the same image: {images:?}"
    );
}

#[test]
fn the_mirror_runs_three_replicas_on_one_s3_store_behind_the_service() {
    let m = Manifests::load();
    let d = m.get("Deployment", "acr");
    assert_eq!(d["spec"]["replicas"], 3);
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    let matches = |selector: &Value| {
        selector
            .as_object()
            .expect("selector")
            .iter()
            .all(|(k, v)| labels[k] == *v)
    };
    assert!(matches(&d["spec"]["selector"]["matchLabels"]));
    let annotations = &d["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let acr = acr_container(d);
    let (_, key, _) = pipeline_of(&m, d);
    let pipeline = Dumped::of(&standalone(&key));
    assert_eq!(
        annotations["prometheus.io/port"],
        pipeline.port().to_string()
    );

    // Replicas share the store only through S3, and read its credentials from the Secret.
    let cache = pipeline.setting("cache");
    assert!(
        cache.len() == 1 && cache[0].starts_with("s3://"),
        "the replicas share an S3 store: `: .cache s3://BUCKET/PREFIX`, not {cache:?}"
    );
    let secret_ref = arr(&acr["envFrom"])
        .iter()
        .find_map(|e| e["secretRef"]["name"].as_str())
        .expect("the S3 credentials come from a Secret (envFrom)");
    let secret = m.get("Secret", secret_ref);
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
        assert!(
            secret["stringData"][var].is_string(),
            "Secret {secret_ref} has no {var}"
        );
    }
    // The security context of the image's user.
    let pod_sc = &pod_spec(d)["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"], true);
    assert_eq!(pod_sc["runAsUser"], 65532);
    for c in all_containers(d) {
        let user = c["securityContext"]["runAsUser"]
            .as_u64()
            .or(pod_sc["runAsUser"].as_u64());
        assert_eq!(user, Some(65532), "{}", s(&c["name"]));
    }

    let svc = m.get("Service", "acr");
    assert!(
        matches(&svc["spec"]["selector"]),
        "the Service selects the mirror's pods"
    );
    let ports = arr(&svc["spec"]["ports"]);
    assert_eq!(ports.len(), 1);
    assert_eq!(
        ports[0]["port"].as_u64(),
        Some(u64::from(pipeline.port())),
        "Service port"
    );
    assert_eq!(
        resolve_port(acr, &ports[0]["targetPort"]),
        pipeline.port(),
        "the Service targets the container port"
    );

    let pdbs = m.of_kind("PodDisruptionBudget");
    assert_eq!(pdbs.len(), 1);
    assert!(
        matches(&pdbs[0]["spec"]["selector"]["matchLabels"]),
        "the PDB selects the mirror's pods"
    );
    let max_unavailable = pdbs[0]["spec"]["maxUnavailable"].as_u64();
    let min_available = pdbs[0]["spec"]["minAvailable"].as_u64();
    assert!(
        max_unavailable.is_some_and(|n| (1..3).contains(&n))
            || min_available.is_some_and(|n| (1..3).contains(&n)),
        "the PDB lets a drain proceed and keeps replicas serving"
    );
}

#[test]
fn the_node_agent_writes_the_nodes_hosts_toml_and_chains_docker_io_to_the_service() {
    let m = Manifests::load();
    let ds = m.get("DaemonSet", "acr-node-agent");
    let spec = pod_spec(ds);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert!(
        !arr(&spec["tolerations"]).is_empty(),
        "the agent tolerates tainted nodes"
    );
    assert_eq!(spec["hostNetwork"], true);
    let acr = acr_container(ds);
    let args = args_of(acr);
    let hosts_dir = flag_value(&args, "--hosts-dir").expect("mirror start --hosts-dir");
    let certs = arr(&spec["volumes"])
        .iter()
        .find(|v| v["hostPath"]["path"] == "/etc/containerd/certs.d")
        .expect("a hostPath volume of the node's /etc/containerd/certs.d");
    assert_eq!(
        mount_path(acr, s(&certs["name"])),
        Some(hosts_dir),
        "--hosts-dir is where the node's certs.d is mounted"
    );

    // docker.io goes to the shared mirror: the Service's DNS name and port, and the shared
    // mirror's default upstream (acr does not pass ?ns= on to an .endpoint).
    let (_, key, _) = pipeline_of(&m, ds);
    let agent = Dumped::of(&standalone(&key));
    let (_, mirror_key, _) = pipeline_of(&m, m.get("Deployment", "acr"));
    let mirror = Dumped::of(&standalone(&mirror_key));
    let svc = m.get("Service", "acr");
    let svc_port = arr(&svc["spec"]["ports"])[0]["port"].as_u64().unwrap();
    let endpoints = agent.setting("endpoint");
    assert!(
        !endpoints.is_empty(),
        "the node agent chains to the shared mirror"
    );
    for e in endpoints {
        let (ns, url) = e.split_once(' ').expect("NS URL");
        let host = url
            .strip_prefix("http://")
            .expect("the Service speaks plain HTTP");
        let name = format!(
            "{}.{}.svc.cluster.local:{svc_port}",
            s(&svc["metadata"]["name"]),
            s(&svc["metadata"]["namespace"])
        );
        assert_eq!(
            host, name,
            "`.endpoint {ns}` names the shared mirror's Service"
        );
        assert_eq!(
            ns, mirror.mirrors[0],
            "only the shared mirror's default upstream ({}) can be chained",
            mirror.mirrors[0]
        );
        assert!(
            agent.mirrors.iter().any(|h| h == ns),
            "the agent writes hosts.toml for {ns}"
        );
        // A hostNetwork pod resolves the cluster's names only with this policy.
        assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    }
    assert_eq!(
        agent.setting("cache"),
        vec!["off"],
        "containerd keeps what the node pulled"
    );
}

// ------------------------------------------------------------------------------------------
// systemd

/// The `[Service]` (and other) settings of a unit: key -> values, in order.
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || line.starts_with('[')
        {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
        out.entry(k.to_string()).or_default().push(v.to_string());
    }
    out
}

#[test]
fn the_systemd_unit_starts_acr_with_arguments_it_accepts() {
    let path = repo_root().join("lib/systemd/acr.service");
    let text = read(&path);
    let unit = unit_settings(&text);
    let one = |k: &str| -> &str {
        let v = unit
            .get(k)
            .unwrap_or_else(|| panic!("acr.service has no {k}="));
        assert_eq!(v.len(), 1, "{k}= more than once");
        &v[0]
    };
    assert_eq!(one("Type"), "simple");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ProtectHome"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    assert_eq!(one("EnvironmentFile"), "-/etc/acr/acr.env");
    let timeout: u64 = one("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("seconds");
    assert!(
        timeout >= shutdown_grace_s() + 5,
        "TimeoutStopSec {timeout} cuts acr's grace short"
    );
    let after: Vec<&str> = one("After").split_whitespace().collect();
    assert!(after.contains(&"network-online.target") && after.contains(&"containerd.service"));

    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(exec[0], "/usr/local/bin/acr");
    // acr parses exactly these arguments.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_acr"));
    cmd.args(&exec[1..]).arg("--help");
    let out = run_cmd(cmd, Duration::from_secs(60));
    assert!(out.success(), "acr refuses the unit's arguments: {out:?}");
    assert!(
        out.stdout.contains("--hosts-dir"),
        "the help of mirror start: {out:?}"
    );

    let working_dir = one("WorkingDirectory");
    assert_eq!(
        working_dir,
        format!("/var/lib/{}", one("StateDirectory")),
        "StateDirectory= creates the working directory"
    );
    let writable: Vec<&str> = unit["ReadWritePaths"]
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|p| p.trim_start_matches('-'))
        .collect();
    let exec_args: Vec<String> = exec.iter().map(|a| a.to_string()).collect();
    let hosts_dir = flag_value(&exec_args, "--hosts-dir").expect("--hosts-dir");
    for p in [working_dir, hosts_dir] {
        assert!(
            writable.contains(&p),
            "{p} is not in ReadWritePaths={writable:?}"
        );
    }
    let runmd = flag_value(&exec_args, "--runmd-path").expect("--runmd-path");
    assert!(Path::new(runmd).is_absolute());

    let Some(analyze) = which("systemd-analyze") else {
        println!("systemd-analyze is not installed: the unit's syntax is not verified");
        return;
    };
    // verify checks that the binary exists: point the copy at the one cargo built.
    let dir = temp_dir("acr-unit-");
    let copy = dir.path().join("acr.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/acr", env!("CARGO_BIN_EXE_acr")),
    )
    .expect("write");
    let mut cmd = Command::new(&analyze);
    cmd.arg("verify").arg(&copy);
    let out = run_cmd(cmd, Duration::from_secs(60));
    let complaints: Vec<&str> = out
        .stdout
        .lines()
        .chain(out.stderr.lines())
        .filter(|l| l.contains("acr.service"))
        .collect();
    assert!(
        out.success() && complaints.is_empty(),
        "systemd-analyze verify: {out:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Dockerfile

/// `FROM IMAGE [AS STAGE]`: (image, stage).
type Stage = (String, Option<String>);
/// Any other instruction: (keyword, the rest of the line).
type Instruction = (String, String);

/// The `FROM`s of the Dockerfile, and its other instructions.
fn dockerfile() -> (Vec<Stage>, Vec<Instruction>) {
    let text = read(&repo_root().join("Dockerfile"));
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
        } else {
            current.push_str(t);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut froms = Vec::new();
    let mut rest = Vec::new();
    for l in logical {
        let (kw, args) = l.split_once(' ').unwrap_or((&l, ""));
        let kw = kw.to_ascii_uppercase();
        if kw == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let stage = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                other => panic!("FROM {other:?}"),
            };
            froms.push((words[0].to_string(), stage));
        } else {
            rest.push((kw, args.trim().to_string()));
        }
    }
    (froms, rest)
}

fn instruction<'a>(rest: &'a [(String, String)], kw: &str) -> Vec<&'a str> {
    rest.iter()
        .filter(|(k, _)| k == kw)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// `rust:1.95-bookworm` -> (1, 95)
fn builder_version() -> (u32, u32, String) {
    let (froms, _) = dockerfile();
    let (image, stage) = &froms[0];
    assert_eq!(
        stage.as_deref(),
        Some("builder"),
        "the first stage is the builder"
    );
    let tag = image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the builder is not a rust image: {image}"));
    let (version, distro) = tag
        .split_once('-')
        .unwrap_or_else(|| panic!("rust:VERSION-DISTRO, not {image}"));
    let mut parts = version
        .split('.')
        .map(|p| p.parse::<u32>().expect("a version"));
    let (major, minor) = (parts.next().unwrap(), parts.next().expect("major.minor"));
    (major, minor, distro.to_string())
}

/// This machine's target triple, from `rustc -vV`.
fn host_target() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("no host line in rustc -vV:\n{text}"))
        .trim()
        .to_string()
}

fn cargo_rust_version() -> (u32, u32) {
    let text = read(&repo_root().join("Cargo.toml"));
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("rust-version") && l.contains('"'))
        .expect("rust-version in Cargo.toml");
    let v = line.split('"').nth(1).unwrap();
    let mut parts = v.split('.').map(|p| p.parse::<u32>().expect("a version"));
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn the_dockerfile_builder_is_the_rust_version_of_cargo_toml() {
    let (major, minor, _) = builder_version();
    let (want_major, want_minor) = cargo_rust_version();
    assert_eq!(
        (major, minor),
        (want_major, want_minor),
        "the Dockerfile builds with rust:{major}.{minor}, Cargo.toml says rust-version = \"{want_major}.{want_minor}\""
    );
}

/// Whatever Cargo.toml says, `cargo build --locked` in the builder needs a toolchain at least
/// as new as every locked dependency's rust-version.
#[test]
fn the_dockerfile_builder_is_new_enough_for_the_locked_dependencies() {
    let (major, minor, _) = builder_version();
    // The builder compiles for Linux on the machine's architecture: the crates of that target
    // are the ones it builds (and the ones `cargo build` here has downloaded, so this runs
    // offline on a machine that never built for Windows or macOS).
    let host = host_target();
    assert!(
        host.contains("-linux-"),
        "the Dockerfile's builder is Linux; this test runs on {host}"
    );
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(repo_root());
    let out = run_cmd(cmd, Duration::from_secs(300));
    assert!(out.success(), "cargo metadata: {out:?}");
    let meta: Value = serde_json::from_str(&out.stdout).expect("metadata JSON");
    let mut needs = Vec::new();
    for p in arr(&meta["packages"]) {
        if let Some(v) = p["rust_version"].as_str() {
            let mut parts = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
            let need = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            if need > (major, minor) {
                needs.push(format!(
                    "{} {} needs rust {v}",
                    s(&p["name"]),
                    s(&p["version"])
                ));
            }
        }
    }
    assert!(
        needs.is_empty(),
        "rust:{major}.{minor} cannot build the locked tree: {needs:#?}"
    );
}

#[test]
fn the_dockerfile_builds_acr_and_runs_the_manifests_pipeline_path() {
    let (froms, rest) = dockerfile();
    assert_eq!(froms.len(), 2, "a builder and a runtime stage");
    let (_, _, builder_distro) = builder_version();
    let runtime = &froms[1].0;
    assert_eq!(
        runtime,
        &format!("debian:{builder_distro}-slim"),
        "the runtime is the builder's Debian (glibc)"
    );
    let runs = instruction(&rest, "RUN").join("\n");
    assert!(
        runs.contains("cargo build --release --locked --bin acr"),
        "the builder runs cargo build --release --locked --bin acr"
    );
    assert!(
        runs.contains("ca-certificates"),
        "the runtime has CA certificates (https upstreams)"
    );
    assert_eq!(
        instruction(&rest, "USER").last().copied(),
        Some("65532:65532")
    );
    assert_eq!(
        instruction(&rest, "WORKDIR").last().copied(),
        Some(STATE_DIR)
    );
    let exposed: Vec<&str> = instruction(&rest, "EXPOSE");
    assert_eq!(exposed, vec!["8578"]);
    let entrypoint: Vec<String> =
        serde_json::from_str(instruction(&rest, "ENTRYPOINT")[0]).expect("ENTRYPOINT [..]");
    assert_eq!(entrypoint, vec!["acr"]);
    let cmd: Vec<String> = serde_json::from_str(instruction(&rest, "CMD")[0]).expect("CMD [..]");

    // The image's command runs the pipeline where the manifests mount it, and acr accepts it.
    let runmd = flag_value(&cmd, "--runmd-path").expect("CMD has --runmd-path");
    let m = Manifests::load();
    let d = m.get("Deployment", "acr");
    let (_, key, _) = pipeline_of(&m, d);
    let copy = arr(&pod_spec(d)["initContainers"])
        .iter()
        .map(args_of)
        .find(|a| a.first().map(String::as_str) == Some("cp"))
        .expect("the copy");
    assert_eq!(runmd, format!("{PIPELINE_MOUNT}/{key}"));
    assert_eq!(
        copy[1], runmd,
        "the pods read the pipeline where the image's CMD does"
    );
    // The pods run the same command on the copy.
    let args = args_of(acr_container(d));
    let strip = |a: &[String]| -> Vec<String> {
        let mut a = a.to_vec();
        if let Some(i) = a.iter().position(|x| x == "--runmd-path") {
            a.drain(i..=i + 1);
        }
        a
    };
    assert_eq!(
        strip(&args),
        strip(&cmd),
        "the Deployment runs the image's command"
    );
    let mut help = Command::new(env!("CARGO_BIN_EXE_acr"));
    help.args(&cmd).arg("--help");
    run_cmd(help, Duration::from_secs(60)).ok();
    let exposed_port: u16 = exposed[0].parse().unwrap();
    let svc = m.get("Service", "acr");
    assert_eq!(
        arr(&svc["spec"]["ports"])[0]["port"].as_u64(),
        Some(u64::from(exposed_port))
    );
}

#[test]
fn the_docker_build_context_has_the_sources_and_not_the_build_output() {
    let text = read(&repo_root().join(".dockerignore"));
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for want in ["target/", ".git", ".world", ".work"] {
        assert!(patterns.contains(&want), ".dockerignore lacks {want}");
    }
    // What the build reads (include_str! of the template and lib/sh, the bench target that
    // Cargo.toml declares) must stay in the context.
    let needed = [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "plugins/Cargo.toml",
        "plugins/src/lib.rs",
        "benches/compile.rs",
        "mirror.runmd.template",
        "lib/sh/setup-env.sh",
    ];
    for path in needed {
        assert!(
            repo_root().join(path).exists(),
            "{path} moved: update this test"
        );
        for p in &patterns {
            let p = p.trim_start_matches("**/").trim_end_matches('/');
            let excluded =
                path == p || path.starts_with(&format!("{p}/")) || path.contains(&format!("/{p}/"));
            assert!(
                !excluded,
                ".dockerignore's {p} excludes {path}, which the build needs"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// the real acr on the deployment's pipelines

/// `text` with each `from` (which must occur) replaced by `to`.
fn adjusted(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (from, to) in replacements {
        assert!(
            out.contains(from),
            "the pipeline no longer contains {from:?}: update this test"
        );
        out = out.replace(from, to);
    }
    out
}

/// The line of `text` that starts with `prefix` (exactly one).
fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(lines.len(), 1, "one line starting with {prefix:?}");
    lines[0]
}

fn hosts_toml(dir: &Path, host: &str) -> String {
    let p = dir.join(host).join("hosts.toml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn get(url: &str) -> HttpResponse {
    try_http_request("GET", url, &[], None).unwrap_or_else(|e| panic!("{e}"))
}

/// The node agent's pipeline, its `127.0.0.1:8578` moved to a free port, writes hosts.toml
/// for every mirrored registry into `--hosts-dir`, answers the probes and stops on SIGTERM.
#[test]
fn the_node_agent_pipeline_writes_hosts_toml_for_each_mirrored_registry() {
    let path = standalone("node-agent.runmd");
    let agent = Dumped::of(&path);
    assert!(agent.loopback());
    let text = adjusted(&read(&path), &[(agent.proxy.as_str(), ACR)]);
    let hosts = temp_dir("acr-certs.d-");
    let acr = Acr::start_with(
        &text,
        AcrOptions {
            hosts_dir: Some(hosts.path().to_path_buf()),
            ..AcrOptions::default()
        },
    );
    assert!(acr.log().contains(&format!("Listening on {}", acr.host())));
    assert!(!agent.mirrors.is_empty());
    for host in &agent.mirrors {
        let toml = hosts_toml(hosts.path(), host);
        let server = if host == "docker.io" {
            "https://registry-1.docker.io".to_string()
        } else {
            format!("https://{host}")
        };
        assert!(
            toml.contains(&format!("server = \"{server}\"")),
            "{host}: containerd falls back to the registry itself:\n{toml}"
        );
        assert!(
            toml.contains(&format!("[host.\"http://{}\"]", acr.host()))
                && toml.contains("capabilities = [\"resolve\", \"pull\"]"),
            "{host}: containerd pulls through the agent:\n{toml}"
        );
    }
    let written: BTreeSet<String> = std::fs::read_dir(hosts.path())
        .expect("hosts dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        written,
        agent.mirrors.iter().cloned().collect(),
        "hosts.toml only for the mirrored registries"
    );
    // Nothing under the pipeline's own directory: --hosts-dir wins.
    assert!(!acr.default_hosts_dir().exists());

    let health = get(&format!("{}/healthz", acr.url()));
    assert_eq!(
        health.status,
        200,
        "/healthz: {}\n{}",
        health.text(),
        acr.log()
    );
    // Whether an upstream answers depends on this machine's network: from here, only that
    // /readyz is acr's answer (200 or 503, never a 404 or a registry error).
    let ready = get(&format!("{}/readyz", acr.url()));
    assert!(
        ready.status == 200 || ready.status == 503,
        "/readyz: {} {}\n{}",
        ready.status,
        ready.text(),
        acr.log()
    );

    // SIGTERM: a clean, prompt stop (the DaemonSet's grace is 45 s).
    // SAFETY: kill(2) on the acr child this test started, by its pid.
    unsafe {
        libc::kill(acr.pid() as libc::pid_t, libc::SIGTERM);
    }
    assert!(
        wait_until(Duration::from_secs(10), || !acr.is_running()),
        "acr did not stop on SIGTERM:\n{}",
        acr.log()
    );
    assert!(acr.log().contains("stopping on signal"), "{}", acr.log());
}

/// s3s-fs on 127.0.0.1, with SigV4 auth, in this process (as in tests/store_s3.rs).
struct S3 {
    addr: SocketAddr,
    root: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl S3 {
    fn start(bucket: &str, access_key: &str, secret_key: &str) -> S3 {
        let root = temp_dir("acr-s3-");
        std::fs::create_dir(root.path().join(bucket)).expect("create the bucket");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(access_key, secret_key));
        let service = builder.build();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind s3");
        let addr = listener.local_addr().expect("s3 addr");
        runtime.spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3 {
            addr,
            root,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether an object whose key contains `part` exists.
    fn holds(&self, part: &str) -> bool {
        fn walk(dir: &Path, part: &str) -> bool {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, part)
                    } else {
                        p.to_string_lossy().contains(part)
                    }
                })
        }
        walk(self.root.path(), part)
    }
}

/// A pull as a node makes it: containerd asks the node agent (`?ns=docker.io`), the agent
/// chains docker.io to the shared mirror, a replica fetches from "Docker Hub" (a fake on
/// 127.0.0.1) and shares what it fetched through the S3 bucket, from which the other replica
/// serves it once Docker Hub is down. Both pipelines are the deployment's, with their addresses
/// moved to this machine, the S3 credentials given under the Secret's variable names.
#[test]
fn a_pull_through_the_node_agent_reaches_the_shared_mirror_and_its_s3_store() {
    let m = Manifests::load();
    let mirror_path = standalone("mirror.runmd");
    let agent_path = standalone("node-agent.runmd");
    let mirror = Dumped::of(&mirror_path);
    let agent = Dumped::of(&agent_path);
    let (default_ns, chained) = agent.setting("endpoint")[0]
        .split_once(' ')
        .expect("NS URL");
    assert_eq!(default_ns, "docker.io");

    // "Docker Hub": one image, library/app:1.
    let layer = pseudo_random_bytes("acr-deploy-layer", 300 << 10);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = digest_of(&manifest);
    let down = Arc::new(AtomicBool::new(false));
    let hub = {
        let (layer, config, manifest, digest, down) = (
            layer.clone(),
            config.clone(),
            manifest.clone(),
            manifest_digest.clone(),
            down.clone(),
        );
        FakeUpstream::start(move |r: &FakeRequest| {
            if down.load(Ordering::SeqCst) {
                return FakeReply::new(503, &[], "down");
            }
            let path = r.path.split('?').next().unwrap_or("");
            if path == "/v2/" {
                return FakeReply::new(200, &[], "{}");
            }
            if path == "/v2/library/app/manifests/1"
                || path == format!("/v2/library/app/manifests/{digest}")
            {
                return FakeReply::new(
                    200,
                    &[
                        ("Content-Type", OCI_MANIFEST),
                        ("Docker-Content-Digest", digest.as_str()),
                    ],
                    manifest.clone(),
                );
            }
            for blob in [&layer, &config] {
                if path == format!("/v2/library/app/blobs/{}", digest_of(blob)) {
                    return FakeReply::new(
                        200,
                        &[("Content-Type", "application/octet-stream")],
                        blob.clone(),
                    );
                }
            }
            FakeReply::new(
                404,
                &[],
                r#"{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}"#,
            )
        })
    };

    // S3, with the bucket the pipeline names and credentials under the Secret's names.
    let location = mirror.setting("cache")[0];
    let bucket = location
        .strip_prefix("s3://")
        .and_then(|b| b.split('/').next())
        .expect("s3://BUCKET/PREFIX");
    let (access_key, secret_key) = ("acr-deploy-test", "acr-deploy-test-secret");
    let s3 = S3::start(bucket, access_key, secret_key);
    let secret = m.get("Secret", "acr-s3");
    let env: Vec<(String, String)> = secret["stringData"]
        .as_object()
        .expect("stringData")
        .iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "AWS_ACCESS_KEY_ID" => access_key,
                "AWS_SECRET_ACCESS_KEY" => secret_key,
                _ => s(v),
            };
            (k.clone(), value.to_string())
        })
        .collect();

    // Two replicas of the shared mirror, each with its own local directory (its emptyDir).
    let mirror_text = read(&mirror_path);
    let endpoint_line = line_starting(&mirror_text, ": .cache-endpoint ");
    let replica_text = adjusted(
        &mirror_text,
        &[
            (
                &format!("+ .proxy {}\n", mirror.proxy),
                &format!(
                    "+ .proxy {ACR}\n: .endpoint {} {}\n",
                    mirror.mirrors[0],
                    hub.url()
                ),
            ),
            (endpoint_line, &format!(": .cache-endpoint {}", s3.url())),
        ],
    );
    let options = AcrOptions {
        env: env.clone(),
        ..AcrOptions::default()
    };
    let a = Acr::start_with(&replica_text, options.clone());
    let b = Acr::start_with(&replica_text, options);
    let ready = get(&format!("{}/readyz", a.url()));
    assert_eq!(
        ready.status,
        200,
        "replica A /readyz: {}\n{}",
        ready.text(),
        a.log()
    );

    // The node agent, chained to replica A instead of the Service.
    let hosts = temp_dir("acr-certs.d-");
    let agent_text = adjusted(
        &read(&agent_path),
        &[(agent.proxy.as_str(), ACR), (chained, &a.url())],
    );
    let node = Acr::start_with(
        &agent_text,
        AcrOptions {
            hosts_dir: Some(hosts.path().to_path_buf()),
            ..AcrOptions::default()
        },
    );
    assert!(hosts_toml(hosts.path(), "docker.io")
        .contains(&format!("[host.\"http://{}\"]", node.host())));
    let ready = get(&format!("{}/readyz", node.url()));
    assert_eq!(
        ready.status,
        200,
        "node agent /readyz: {}\n{}",
        ready.text(),
        node.log()
    );

    // containerd's requests: the manifest by tag, then the blobs, each with ?ns=docker.io.
    let r = try_http_request(
        "GET",
        &format!("{}/v2/library/app/manifests/1?ns=docker.io", node.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.status,
        200,
        "manifest through the node agent: {}\nagent:\n{}\nA:\n{}",
        r.text(),
        node.log(),
        a.log()
    );
    assert_eq!(
        r.header("docker-content-digest"),
        Some(manifest_digest.as_str())
    );
    assert!(r.body == manifest);
    for blob in [&config, &layer] {
        let r = get(&format!(
            "{}/v2/library/app/blobs/{}?ns=docker.io",
            node.url(),
            digest_of(blob)
        ));
        assert_eq!(
            r.status,
            200,
            "blob through the node agent: {}\n{}",
            r.text(),
            a.log()
        );
        assert!(r.body == *blob, "the blob's bytes");
    }
    // The pulls went agent -> replica A -> "Docker Hub".
    assert!(
        !a.requests_with(&["/v2/library/app/manifests/1"]).is_empty(),
        "A saw the manifest:\n{}",
        a.log()
    );
    let hub_saw = hub.requests();
    assert!(
        hub_saw
            .iter()
            .any(|r| r.ends_with(&format!("/v2/library/app/blobs/{}", digest_of(&layer)))),
        "{hub_saw:?}"
    );
    assert!(
        b.requests_with(&["/v2/library/app"]).is_empty(),
        "B was not asked yet"
    );

    // A shared the layer through the bucket; with Docker Hub down, B serves it from there.
    let layer_hex = digest_of(&layer).trim_start_matches("sha256:").to_string();
    assert!(
        wait_until(Duration::from_secs(30), || s3
            .holds(&format!("blobs/sha256/{layer_hex}"))),
        "the layer never reached the bucket:\n{}",
        a.log()
    );
    down.store(true, Ordering::SeqCst);
    let before = hub.requests().len();
    let r = get(&format!(
        "{}/v2/library/app/blobs/{}",
        b.url(),
        digest_of(&layer)
    ));
    assert_eq!(
        r.status,
        200,
        "replica B, Docker Hub down: {}\nB:\n{}\nA:\n{}",
        r.text(),
        b.log(),
        a.log()
    );
    assert!(r.body == layer, "B served the layer A fetched");
    // (A `GET /v2/` ping, which `.authn` may send, is no content.)
    let asked: Vec<String> = hub.requests()[before..]
        .iter()
        .filter(|r| r.as_str() != "GET /v2/" && r.as_str() != "HEAD /v2/")
        .cloned()
        .collect();
    assert!(
        asked.is_empty(),
        "B asked Docker Hub for content: {asked:?}\n{}",
        b.log()
    );

    // What Prometheus scrapes (the pod annotation's path).
    let metrics = get(&format!("{}/metrics", b.url()));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("acr_cache_hits_total"),
        "{}",
        metrics.text()
    );
}
