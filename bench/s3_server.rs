//! The benchmark's shared store for acr's replicas: the S3 server the tests use (s3s-fs, see
//! `tests/harness/s3_serve.rs`) as a program.
//!
//!     s3-server ADDR ROOT ACCESS_KEY SECRET_KEY      (a directory of ROOT is a bucket)

#[path = "../tests/harness/s3_serve.rs"]
mod s3_serve;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, root, access, secret] = args.as_slice() else {
        return Err("usage: s3-server ADDR ROOT ACCESS_KEY SECRET_KEY".into());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr.as_str()).await?;
        eprintln!("s3-server listening on {}", listener.local_addr()?);
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        s3_serve::serve(listener, std::path::Path::new(root), access, secret, log)?.await;
        Ok(())
    })
}
