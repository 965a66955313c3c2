-- wrk script for the manifest benchmark: asks for an OCI image manifest (what a runtime sends)
-- and prints one machine-readable line at the end, which bench/run parses:
--   BENCH requests=N duration_us=N bytes=N p50_us=N p99_us=N connect=N read=N write=N status=N timeout=N
-- `status` counts non-2xx/3xx answers: bench/run fails the run if it is not 0.
wrk.headers["Accept"] = "application/vnd.oci.image.manifest.v1+json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
