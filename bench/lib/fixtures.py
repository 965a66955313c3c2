#!/usr/bin/env python3
"""Builds the benchmark's OCI image layouts by hand (no umoci, no network).

    fixtures.py OUT_DIR BIG_MIB

writes two layouts under OUT_DIR, each with the reference name "1":

  OUT_DIR/big    one layer: a tar holding /big.bin, BIG_MIB MiB of incompressible bytes
  OUT_DIR/multi  eight layers of 8 to 32 MiB each (156 MiB in all), also incompressible

Layers are gzip streams at level 0 (stored deflate blocks): a valid tar+gzip layer whose size
on the wire is the size of its content (+5 bytes per 64 KiB), built at memory speed instead of
the ~40 MB/s of `gzip -1` on random data. Everything is deterministic (seeded PRNG, fixed
timestamps), so the digests are the same on every run and machine.

Prints one JSON object: for each image its manifest digest/size and its layers (digest, size).
"""
import hashlib
import json
import os
import random
import sys
import tarfile
import zlib

CHUNK = 1 << 20
MTIME = 946684800  # 2000-01-01T00:00:00Z
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"

MULTI_LAYERS_MIB = [8, 12, 16, 20, 24, 28, 32, 16]


class BlobWriter:
    """Writes a blob into LAYOUT/blobs/sha256 while hashing it; renamed to its digest on close."""

    def __init__(self, layout):
        self.dir = os.path.join(layout, "blobs", "sha256")
        os.makedirs(self.dir, exist_ok=True)
        self.tmp = os.path.join(self.dir, ".tmp-%d" % os.getpid())
        self.f = open(self.tmp, "wb")
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b):
        if b:
            self.f.write(b)
            self.h.update(b)
            self.size += len(b)

    def close(self):
        self.f.close()
        hexd = self.h.hexdigest()
        os.replace(self.tmp, os.path.join(self.dir, hexd))
        return "sha256:" + hexd, self.size


def put_bytes(layout, data):
    w = BlobWriter(layout)
    w.write(data)
    return w.close()


def random_layer(layout, name, size, seed):
    """A tar+gzip(level 0) layer holding one file NAME of SIZE seeded random bytes.
    Returns (digest, size, diff_id)."""
    rng = random.Random(seed)
    w = BlobWriter(layout)
    gz = zlib.compressobj(0, zlib.DEFLATED, 31)  # wbits 31: gzip container
    diff = hashlib.sha256()

    def emit(raw):
        diff.update(raw)
        w.write(gz.compress(raw))

    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = MTIME
    info.mode = 0o644
    info.uname = info.gname = "root"
    emit(info.tobuf(format=tarfile.PAX_FORMAT))
    left = size
    while left > 0:
        n = min(CHUNK, left)
        emit(rng.randbytes(n))
        left -= n
    pad = (-size) % 512
    emit(b"\0" * pad + b"\0" * 1024)  # padding, then the end-of-archive marker
    w.write(gz.flush())
    digest, blob_size = w.close()
    return digest, blob_size, "sha256:" + diff.hexdigest()


def image(layout, layers):
    """Writes config, manifest, index.json and oci-layout for LAYERS [(digest, size, diff_id)]."""
    config = {
        "created": "2000-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [d for _, _, d in layers]},
        "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "acr bench"} for _ in layers],
    }
    cfg = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    cfg_digest, cfg_size = put_bytes(layout, cfg)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": OCI_LAYER_GZ, "digest": d, "size": s} for d, s, _ in layers],
    }
    mbytes = json.dumps(manifest, indent=2).encode()
    m_digest, m_size = put_bytes(layout, mbytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": m_digest,
                "size": m_size,
                "annotations": {"org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return {
        "manifest": m_digest,
        "manifest_size": m_size,
        "config": cfg_digest,
        "layers": [{"digest": d, "size": s} for d, s, _ in layers],
    }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out, big_mib = sys.argv[1], int(sys.argv[2])
    big_dir = os.path.join(out, "big")
    big = image(big_dir, [random_layer(big_dir, "big.bin", big_mib << 20, "acr-bench-big:%d" % big_mib)])
    multi_dir = os.path.join(out, "multi")
    layers = [
        random_layer(multi_dir, "layer%d.bin" % i, mib << 20, "acr-bench-multi:%d:%d" % (i, mib))
        for i, mib in enumerate(MULTI_LAYERS_MIB)
    ]
    multi = image(multi_dir, layers)
    print(json.dumps({"big": big, "multi": multi}))


if __name__ == "__main__":
    main()
