//! The stand-in with a CNCF distribution behind it (token auth whose realm is the stand-in) and its seeding.

use super::*;

// ------------------------------------------------------------------------------------------
// stand-in + distribution

/// What [`AcrRegistry::seed_streaming`] pushed into `library/test`.
#[derive(Clone, Debug)]
pub struct Streaming {
    /// `library/test:1` (OCI manifest): the subject of the referrers.
    pub subject: String,
    pub subject_size: u64,
    /// `library/test:obd` (the same image as Docker schema 2): the "streamable" twin.
    pub twin: String,
    pub twin_size: u64,
    /// The streaming link artifact (overlaybd, linux/amd64, pointing at the twin).
    pub link: String,
    /// A streaming link of another format (`nydus`, linux/amd64) whose `streaming.digest`
    /// is the subject itself: choosing it instead of `link` swaps nothing.
    pub decoy: String,
    /// A referrer that is no streaming link at all.
    pub signature: String,
}

/// The stand-in ACR: [`AcrStandin`] in front of a CNCF distribution whose token realm it is.
pub struct AcrRegistry {
    pub standin: AcrStandin,
    /// The distribution behind the stand-in (seeding goes straight to it, as the admin user).
    pub backend: Registry,
}

impl AcrRegistry {
    pub fn start(opts: &AcrStandinOptions) -> AcrRegistry {
        let standin = AcrStandin::start(opts);
        let backend = Registry::start_with_auth_yaml(
            &standin.auth_yaml(),
            Some((ADMIN_USER.into(), ADMIN_PASS.into())),
        );
        standin.configure(serde_json::json!({"backend": backend.url()}));
        let r = standin.fetch("GET", "/v2/", &[]);
        assert_eq!(r.status, 401, "the stand-in does not front the registry");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains(&standin.realm()),
            "the registry's challenge does not name the stand-in: {challenge}"
        );
        AcrRegistry { standin, backend }
    }

    /// `127.0.0.1:PORT` of the login server (the stand-in).
    pub fn host(&self) -> String {
        self.standin.host()
    }
    /// `http://127.0.0.1:PORT` of the login server: what `--registry-host` gets.
    pub fn url(&self) -> String {
        self.standin.url()
    }

    /// Pushes `library/test:1` and returns its digest (= the fixture's).
    pub fn seed_test(&self) -> String {
        push(&self.backend, &fixtures().test, "library/test:1", &[]);
        let (digest, _) = raw_manifest(&self.backend, "library/test:1");
        assert_eq!(digest, fixtures().test.digest);
        digest
    }

    /// Uploads `data` as a blob of `repo` (POST, then PUT with the digest).
    pub fn push_blob(&self, repo: &str, data: &[u8], token: &str) -> String {
        let digest = digest_of(data);
        let auth = format!("Bearer {token}");
        let r = http_request(
            "POST",
            &format!("{}/v2/{repo}/blobs/uploads/", self.backend.url()),
            &[("Authorization", &auth)],
            Some(b""),
        );
        assert_eq!(r.status, 202, "start upload: {}", r.text());
        let location = r.header("location").expect("upload Location").to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.backend.url())
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = http_request(
            "PUT",
            &format!("{location}{sep}digest={}", form_encode(&digest)),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/octet-stream"),
            ],
            Some(data),
        );
        assert_eq!(r.status, 201, "finish upload: {}", r.text());
        digest
    }

    /// PUTs a manifest (or index) `body` as `repo:reference`; returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
        token: &str,
    ) -> String {
        let r = http_request(
            "PUT",
            &format!("{}/v2/{repo}/manifests/{reference}", self.backend.url()),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", media_type),
            ],
            Some(body),
        );
        assert_eq!(r.status, 201, "PUT {repo}:{reference}: {}", r.text());
        digest_of(body)
    }

    /// Seeds `library/test:1`, its "streamable" twin `library/test:obd` (the same image as
    /// Docker schema 2), and three referrers of `test:1` — a signature, a `nydus` streaming
    /// link (decoy) and the overlaybd linux/amd64 streaming link to the twin — pushed as an
    /// ORAS client does against a registry without the referrers API: the artifact
    /// manifests by digest, and the referrers tag `sha256-<hex of test:1>` holding an OCI
    /// index of their descriptors (in that order: the link comes last).
    pub fn seed_streaming(&self) -> Streaming {
        let subject = self.seed_test();
        let (_, subject_raw) = raw_manifest(&self.backend, "library/test:1");
        push(
            &self.backend,
            &fixtures().test,
            "library/test:obd",
            &["--format", "v2s2"],
        );
        let (twin, twin_raw) = raw_manifest(&self.backend, "library/test:obd");
        assert_ne!(twin, subject, "the twin must be another manifest");
        let token = self
            .standin
            .admin_token("repository:library/test:pull,push");
        let empty = self.push_blob("library/test", b"{}", &token);
        let empty_desc = serde_json::json!({"mediaType": OCI_EMPTY, "digest": empty, "size": 2});
        let subject_desc = serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": subject, "size": subject_raw.len(),
        });
        let artifact = |artifact_type: &str, annotations: serde_json::Value| {
            let body = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": empty_desc,
                "layers": [empty_desc],
                "subject": subject_desc,
                "annotations": annotations,
            }))
            .expect("json");
            let digest = self.put_manifest(
                "library/test",
                &digest_of(&body),
                OCI_MANIFEST,
                &body,
                &token,
            );
            let desc = serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": body.len(),
                "artifactType": artifact_type,
                "annotations": annotations,
            });
            (digest, desc)
        };
        let (signature, sig_desc) = artifact(
            SIGNATURE_TYPE,
            serde_json::json!({"org.example.note": "a signature, not a streaming link"}),
        );
        let (decoy, decoy_desc) = artifact(
            LINK_TYPE,
            serde_json::json!({
                "streaming.format": "nydus",
                "streaming.digest": subject,
                "streaming.mediaType": OCI_MANIFEST,
                "streaming.size": subject_raw.len().to_string(),
                "streaming.platform.os": "linux",
                "streaming.platform.arch": "amd64",
            }),
        );
        let (link, link_desc) = artifact(
            LINK_TYPE,
            serde_json::json!({
                "streaming.format": "overlaybd",
                "streaming.digest": twin,
                "streaming.mediaType": DOCKER_MANIFEST,
                "streaming.size": twin_raw.len().to_string(),
                "streaming.platform.os": "linux",
                "streaming.platform.arch": "amd64",
            }),
        );
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [sig_desc, decoy_desc, link_desc],
        }))
        .expect("json");
        let tag = subject.replace(':', "-");
        self.put_manifest("library/test", &tag, OCI_INDEX, &index, &token);
        Streaming {
            subject,
            subject_size: subject_raw.len() as u64,
            twin,
            twin_size: twin_raw.len() as u64,
            link,
            decoy,
            signature,
        }
    }
}
