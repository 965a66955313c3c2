//! A small PKI made with `openssl` (a CA, server and client certificates).

use super::*;

// ------------------------------------------------------------------------------------------
// a PKI made with openssl

/// A certificate authority (EC P-256) in a temp dir, issuing leaf certificates for
/// 127.0.0.1 (server) or for a client.
pub struct Pki {
    dir: TempDir,
    name: String,
}

fn openssl(args: &[&str], dir: &Path) -> CmdOutput {
    require_tools(&["openssl"]);
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    run_cmd(cmd, CMD_TIMEOUT).ok()
}

/// `openssl req MODE` (`-x509` or `-new`) with a new EC P-256 key: writes `key_out.0` (the
/// key) and `key_out.1` (the certificate or request) for `subject`, plus `extra` arguments.
fn openssl_req(mode: &str, key_out: (&str, &str), subject: &str, extra: &[&str], dir: &Path) {
    let mut args = vec![
        "req",
        mode,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key_out.0,
        "-out",
        key_out.1,
        "-subj",
        subject,
    ];
    args.extend_from_slice(extra);
    openssl(&args, dir);
}

impl Pki {
    /// A new CA whose subject CN is `name`.
    pub fn new(name: &str) -> Pki {
        let dir = temp_dir("acr-pki-");
        let subject = format!("/CN={name}");
        openssl_req(
            "-x509",
            ("ca.key", "ca.crt"),
            &subject,
            &[
                "-days",
                "3",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            dir.path(),
        );
        Pki {
            dir,
            name: name.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA's certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A directory holding only `ca.crt`: what `skopeo --cert-dir` / `--src-cert-dir` reads.
    pub fn cert_dir(&self) -> PathBuf {
        let d = self.dir.path().join("trust");
        std::fs::create_dir_all(&d).expect("mkdir trust");
        std::fs::copy(self.ca_cert(), d.join("ca.crt")).expect("copy ca.crt");
        d
    }

    fn issue(&self, file: &str, cn: &str, ext: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let subject = format!("/CN={cn}");
        let (key, csr, crt, extf) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.crt"),
            format!("{file}.ext"),
        );
        std::fs::write(d.join(&extf), ext).expect("write ext file");
        openssl_req("-new", (&key, &csr), &subject, &[], d);
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
            d,
        );
        (d.join(crt), d.join(key))
    }

    /// A server certificate for IP 127.0.0.1 (and localhost) with subject CN `cn`:
    /// `(cert, key)` files named `<file>.crt` / `<file>.key` in the CA's directory.
    pub fn server(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(
            file,
            cn,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
    }

    /// A client certificate with subject CN `cn`.
    pub fn client(&self, file: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(
            file,
            cn,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        )
    }
}

/// The subject of the certificate served at `127.0.0.1:port`, as
/// `openssl s_client | openssl x509 -noout -subject` prints it (`subject=CN = name`), or the
/// empty string when no certificate came back.
pub fn served_subject(port: u16) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    run_cmd(cmd, Duration::from_secs(60))
        .stdout
        .trim()
        .to_string()
}
