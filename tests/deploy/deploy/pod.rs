//! A workload's acr container run on this machine the way its pod runs it: every volume the
//! container mounts is a directory here (a ConfigMap's keys as read-only files owned by root,
//! an emptyDir owned by the pod's user, a Secret volume with the keys of the manifests' own
//! Secret of that name, if any, read-only, hostPath volumes empty), the manifest's own args,
//! workingDir and env (`status.podIP` is 127.0.0.1) with each mount path moved to its directory, and acr as the pod's
//! user (`setpriv`) when that is not root. So a test sees what the pod would do with a
//! read-only pipeline: a write beside it fails as it would in the pod, and
//! [`PodRun::assert_pipeline_untouched`] catches one even when the pod runs as root.

use std::os::unix::fs::{chown, PermissionsExt};

use super::*;

/// One mount of the container: where the pod sees it, where it is here.
struct Mount {
    path_in_pod: String,
    here: PathBuf,
}

/// The stand-in directories of a pod's mounts.
struct PodDirs {
    /// Longest mount path first, so that a path is moved by its own mount.
    mounts: Vec<Mount>,
    /// The ConfigMap volume's directory.
    pipeline_dir: PathBuf,
    root: tempfile::TempDir,
}

impl PodDirs {
    /// A directory for each volume `container` mounts; an emptyDir belongs to `uid`.
    fn of(m: &Manifests, workload: &Value, container: &Value, uid: u32) -> PodDirs {
        let root = temp_dir("acr-pod-");
        // The pod's user must reach the directories below.
        set_mode(root.path(), 0o755);
        let mut mounts = Vec::new();
        let mut pipeline_dir = None;
        for (i, vm) in arr(&container["volumeMounts"]).iter().enumerate() {
            let here = root.path().join(format!("volume-{i}"));
            std::fs::create_dir(&here).expect("mkdir");
            set_mode(&here, 0o755);
            let v = volume(workload, s(&vm["name"]));
            if v["configMap"].is_object() {
                pipeline_dir = Some(here.clone());
            } else if v["emptyDir"].is_object() {
                chown(&here, Some(uid), Some(uid)).expect("chown the emptyDir");
            } else if v["secret"].is_object() {
                secret_files(m, &v["secret"], &here);
            }
            mounts.push(Mount {
                path_in_pod: s(&vm["mountPath"]).to_string(),
                here,
            });
        }
        mounts.sort_by_key(|mt| std::cmp::Reverse(mt.path_in_pod.len()));
        let pipeline_dir = pipeline_dir
            .unwrap_or_else(|| panic!("{}: no ConfigMap volume is mounted", name_of(workload)));
        PodDirs {
            mounts,
            pipeline_dir,
            root,
        }
    }

    /// `path` as seen from this machine (a path in the pod under one of its mounts).
    fn moved(&self, path: &str) -> String {
        for mt in &self.mounts {
            if path == mt.path_in_pod {
                return mt.here.display().to_string();
            }
            if let Some(rest) = path.strip_prefix(&format!("{}/", mt.path_in_pod)) {
                return mt.here.join(rest).display().to_string();
            }
        }
        path.to_string()
    }

    /// `text` with every mount path in it moved, in one pass (a moved path is not moved
    /// again by a shorter mount path, `/tmp`, that it starts with).
    fn moved_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        'scan: while let Some(c) = rest.chars().next() {
            for mt in &self.mounts {
                if let Some(after) = rest.strip_prefix(mt.path_in_pod.as_str()) {
                    let whole = after
                        .chars()
                        .next()
                        .is_none_or(|n| !(n.is_alphanumeric() || n == '-' || n == '_' || n == '.'));
                    if whole {
                        out.push_str(&mt.here.display().to_string());
                        rest = after;
                        continue 'scan;
                    }
                }
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

/// A running acr in its stand-in pod directories; stopped (the directories removed) on drop.
pub(super) struct PodRun {
    pub(super) acr: AcrProcess,
    /// The pipeline file's name in the ConfigMap's directory and the text acr was given.
    pipeline: (String, String),
    dirs: PodDirs,
}

impl PodRun {
    /// Starts the acr container of `workload`; its pipeline (the ConfigMap's text) gets
    /// `replacements` (each must occur) first, and the process gets `env` besides the
    /// container's own. Replace the pipeline's proxy address by [`ACR`].
    pub(super) fn start(
        m: &Manifests,
        workload: &Value,
        replacements: &[(&str, &str)],
        env: &[(String, String)],
    ) -> PodRun {
        let container = acr_container(workload);
        let (_, key, text) = pipeline_of(m, workload);
        let uid = pod_user(workload, container);
        let dirs = PodDirs::of(m, workload, container, uid);
        let mut adjusted = text;
        for (from, to) in replacements {
            assert!(
                adjusted.contains(from),
                "the pipeline no longer contains {from:?}: update this test"
            );
            adjusted = adjusted.replace(from, to);
        }
        let adjusted = dirs.moved_text(&adjusted);
        let args: Vec<String> = args_of(container).iter().map(|a| dirs.moved(a)).collect();
        let work_dir = dirs.moved(s(&container["workingDir"]));
        let container_env: Vec<(String, String)> = arr(&container["env"])
            .iter()
            .filter_map(|e| {
                let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("status.podIP") => "127.0.0.1",
                    _ => e["value"].as_str()?,
                };
                Some((s(&e["name"]).to_string(), dirs.moved(value)))
            })
            .collect();
        let runmd = dirs.pipeline_dir.join(&key);
        let mut given = String::new();
        let acr = spawn_listening(
            dirs.root.path(),
            Duration::from_secs(60),
            |addr| {
                // Written by root, read-only for everyone: the ConfigMap as the kubelet
                // makes it.
                given = adjusted.replace(ACR, addr);
                set_mode(&dirs.pipeline_dir, 0o755);
                if runmd.exists() {
                    set_mode(&runmd, 0o644);
                }
                std::fs::write(&runmd, &given).expect("write the pipeline");
                set_mode(&runmd, 0o444);
                set_mode(&dirs.pipeline_dir, 0o555);
                // SAFETY: geteuid(2) has no preconditions and cannot fail.
                let mut cmd = if uid == unsafe { libc::geteuid() } {
                    Command::new(env!("CARGO_BIN_EXE_acr"))
                } else {
                    let mut c = Command::new("setpriv");
                    c.arg(format!("--reuid={uid}"))
                        .arg(format!("--regid={uid}"))
                        .args(["--clear-groups", "--"])
                        .arg(env!("CARGO_BIN_EXE_acr"));
                    c
                };
                cmd.args(&args)
                    .current_dir(&work_dir)
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .env("NO_COLOR", "1")
                    .envs(container_env.iter().cloned())
                    .envs(env.iter().cloned());
                cmd
            },
            String::new,
        );
        PodRun {
            acr,
            pipeline: (key, given),
            dirs,
        }
    }

    /// `path` in the pod, as seen from this machine.
    pub(super) fn here(&self, path_in_pod: &str) -> PathBuf {
        PathBuf::from(self.dirs.moved(path_in_pod))
    }

    /// Asserts that the pipeline's directory holds what the ConfigMap put there, unchanged,
    /// and nothing acr wrote.
    pub(super) fn assert_pipeline_untouched(&self) {
        let found: BTreeSet<String> = std::fs::read_dir(&self.dirs.pipeline_dir)
            .expect("read the pipeline dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let (name, text) = &self.pipeline;
        assert_eq!(
            found,
            BTreeSet::from([name.clone()]),
            "acr wrote beside its read-only pipeline:\n{}",
            self.acr.log()
        );
        assert_eq!(
            &read(&self.dirs.pipeline_dir.join(name)),
            text,
            "{name} changed"
        );
    }
}

/// The uid the pod runs acr as (the container's, else the pod's `runAsUser`; root if none).
/// A test that does not run as root runs acr as itself: the read-only directory holds for it
/// all the same.
/// The keys of the Secret a `secret:` volume names, as the kubelet lays them out in `dir`
/// (`items` renames keys); nothing when the manifests hold no such Secret.
fn secret_files(m: &Manifests, volume: &Value, dir: &Path) {
    let Some(secret) = m.find("Secret", s(&volume["secretName"])) else {
        return;
    };
    let data = secret["stringData"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let items = arr(&volume["items"]);
    for (key, value) in data {
        let name = match items.iter().find(|i| s(&i["key"]) == key) {
            Some(item) => s(&item["path"]).to_string(),
            None if items.is_empty() => key.clone(),
            None => continue,
        };
        let file = dir.join(name);
        std::fs::write(&file, value.as_str().unwrap_or_default()).expect("write a secret key");
        set_mode(&file, 0o444);
    }
}

fn pod_user(workload: &Value, container: &Value) -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if me != 0 {
        return me;
    }
    container["securityContext"]["runAsUser"]
        .as_u64()
        .or(pod_spec(workload)["securityContext"]["runAsUser"].as_u64())
        .unwrap_or(0) as u32
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}
