//! The Kubernetes manifests and the pipelines they mount.

use super::*;

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

/// A changed pipeline must roll the pods (what acr reads once at start needs it): the pod
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
fn the_node_agent_writes_the_nodes_hosts_toml_and_chains_its_registries_to_the_service() {
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

    // Every registry the agent mirrors goes to the shared mirror: the Service's DNS name and
    // port, with `?ns=` naming the registry, which the shared mirror must serve.
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
    for e in &endpoints {
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
        assert!(
            mirror.mirrors.iter().any(|h| h == ns),
            "the shared mirror serves {ns} (its `.mirror`: {:?})",
            mirror.mirrors
        );
        assert!(
            agent.mirrors.iter().any(|h| h == ns),
            "the agent writes hosts.toml for {ns}"
        );
        // A hostNetwork pod resolves the cluster's names only with this policy.
        assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    }
    let chained: BTreeSet<&str> = endpoints
        .iter()
        .filter_map(|e| e.split_once(' ').map(|(ns, _)| ns))
        .collect();
    assert_eq!(
        chained,
        agent.mirrors.iter().map(String::as_str).collect(),
        "every registry the agent mirrors is chained to the shared mirror"
    );
    assert_eq!(
        agent.setting("cache"),
        vec!["off"],
        "containerd keeps what the node pulled"
    );
}

/// acr runs on the ConfigMap, read-only, and everything it writes goes to a writable volume:
/// its working directory and HOME, the `hosts.toml` files (`--hosts-dir`), and, when the
/// pipeline keeps a store, the store's local tier (`.cache-dir`), which must then be set
/// (without it the store would go beside the read-only pipeline).
#[test]
fn acr_writes_only_to_writable_volumes_never_beside_its_pipeline() {
    let m = Manifests::load();
    for w in m.workloads() {
        let who = name_of(w);
        let acr = acr_container(w);
        let (_, key, _) = pipeline_of(&m, w);
        let pipeline = Dumped::of(&standalone(&key));
        let args = args_of(acr);
        let writable: Vec<(&str, &Value)> = arr(&acr["volumeMounts"])
            .iter()
            .filter(|vm| vm["readOnly"] != true)
            .map(|vm| (s(&vm["mountPath"]), volume(w, s(&vm["name"]))))
            .collect();
        let on_writable = |path: &str| {
            writable
                .iter()
                .find(|(mount, _)| path == *mount || path.starts_with(&format!("{mount}/")))
        };
        for (mount, v) in &writable {
            assert!(
                v["emptyDir"].is_object() || v["hostPath"].is_object(),
                "{who}: {mount} is writable but neither an emptyDir nor a hostPath"
            );
        }
        let home = arr(&acr["env"])
            .iter()
            .find(|e| e["name"] == "HOME")
            .map(|e| s(&e["value"]))
            .unwrap_or_else(|| panic!("{who}: HOME is set"));
        for (what, path) in [
            ("workingDir", s(&acr["workingDir"])),
            ("HOME", home),
            (
                "--hosts-dir",
                flag_value(&args, "--hosts-dir")
                    .unwrap_or_else(|| panic!("{who}: `.mirror` writes to --hosts-dir")),
            ),
        ] {
            assert!(
                on_writable(path).is_some(),
                "{who}: {what} {path} is not on a writable volume"
            );
        }
        if pipeline.setting("cache") == vec!["off"] {
            continue;
        }
        let cache_dir = pipeline.setting("cache-dir");
        assert_eq!(
            cache_dir.len(),
            1,
            "{who}: a store needs `: .cache-dir DIR` (its default is beside the read-only pipeline)"
        );
        assert!(
            cache_dir[0].starts_with('/'),
            "{who}: .cache-dir is absolute"
        );
        let (_, v) = on_writable(cache_dir[0]).unwrap_or_else(|| {
            panic!(
                "{who}: .cache-dir {} is not on a writable volume",
                cache_dir[0]
            )
        });
        assert!(
            v["emptyDir"]["sizeLimit"].is_string(),
            "{who}: the store's local tier is on an emptyDir with a sizeLimit"
        );
    }
}
