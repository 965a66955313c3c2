#!/usr/bin/env python3
"""Signs an image in a registry the way `cosign sign --key` does, for bench/run's `.verify` row.

    cosign_sign.py REGISTRY_ADDR REPOSITORY DIGEST KEY_DIR

Makes a P-256 key pair with openssl in KEY_DIR (cosign.key, cosign.pub), signs cosign's
simple-signing payload for DIGEST with it (`openssl dgst -sha256 -sign`: ASN.1 DER, as cosign),
and pushes the `sha256-HEX.sig` manifest (plain http) with the payload as its one layer and the
base64 signature in the layer's `dev.cosignproject.cosign/signature` annotation. Prints the
public key's path.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import urllib.request

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def request(method, url, body=b"", headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, resp.headers


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(base, repo, data):
    _, headers = request("POST", f"{base}/v2/{repo}/blobs/uploads/")
    location = headers["Location"]
    if not location.startswith("http"):
        location = base + location
    sep = "&" if "?" in location else "?"
    status, _ = request("PUT", f"{location}{sep}digest={digest_of(data)}", data,
                        {"Content-Type": "application/octet-stream"})
    assert status == 201, status


def main():
    addr, repo, digest, key_dir = sys.argv[1:5]
    base = f"http://{addr}"
    key, pub = os.path.join(key_dir, "cosign.key"), os.path.join(key_dir, "cosign.pub")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", key], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True, capture_output=True)
    payload = json.dumps(
        {"critical": {"identity": {"docker-reference": f"{addr}/{repo}"},
                      "image": {"docker-manifest-digest": digest},
                      "type": "cosign container image signature"},
         "optional": None},
        separators=(",", ":")).encode()
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=payload,
                               check=True, capture_output=True).stdout
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(payload)]}},
                        separators=(",", ":")).encode()
    upload(base, repo, config)
    upload(base, repo, payload)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "size": len(config), "digest": digest_of(config)},
        "layers": [{"mediaType": SIMPLE_SIGNING, "size": len(payload), "digest": digest_of(payload),
                    "annotations": {"dev.cosignproject.cosign/signature": base64.b64encode(signature).decode()}}],
    }, separators=(",", ":")).encode()
    tag = "sha256-" + digest.split(":", 1)[1] + ".sig"
    status, _ = request("PUT", f"{base}/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
    assert status == 201, status
    print(pub)


if __name__ == "__main__":
    main()
