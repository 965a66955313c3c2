//! A raw HTTP/1.1 upstream that can trickle a body one byte at a time.

use super::*;

// ------------------------------------------------------------------------------------------
// an upstream that trickles

/// What a [`SlowUpstream`] answers: like a `FakeReply`, and with `per_byte` the body is sent
/// one byte at a time, that long apart.
#[derive(Clone, Debug, Default)]
pub struct SlowReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub per_byte: Option<Duration>,
}

impl SlowReply {
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> SlowReply {
        let FakeReply {
            status,
            headers,
            body,
            ..
        } = FakeReply::new(status, headers, body);
        SlowReply {
            status,
            headers,
            body,
            per_byte: None,
        }
    }
}

type SlowHandler = dyn Fn(&FakeRequest) -> SlowReply + Send + Sync;

/// A raw HTTP/1.1 upstream on 127.0.0.1: a thread per connection, one request per
/// connection (`Connection: close`). It counts the connections still open and the trickled
/// bodies a client broke off; dropped, it stops trickling.
pub struct SlowUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(Instant, FakeRequest)>>>,
    open: Arc<AtomicUsize>,
    broken_off: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl SlowUpstream {
    pub fn start(handler: impl Fn(&FakeRequest) -> SlowReply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the slow upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let broken_off = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<SlowHandler> = Arc::new(handler);
        let (seen2, open2, broken2, stop2) =
            (seen.clone(), open.clone(), broken_off.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (h, seen, open, broken, stop) = (
                    handler.clone(),
                    seen2.clone(),
                    open2.clone(),
                    broken2.clone(),
                    stop2.clone(),
                );
                open.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    serve_slow(stream, &*h, &seen, &broken, &stop);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        SlowUpstream {
            addr,
            seen,
            open,
            broken_off,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `METHOD PATH` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|s| {
                s.iter()
                    .map(|(_, r)| format!("{} {}", r.method, r.path))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Connections accepted and not finished yet.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Trickled bodies whose reader went away before the end.
    pub fn broken_off(&self) -> usize {
        self.broken_off.load(Ordering::SeqCst)
    }
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_slow(
    mut stream: TcpStream,
    handler: &SlowHandler,
    seen: &Mutex<Vec<(Instant, FakeRequest)>>,
    broken_off: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(req) = read_request(&mut stream) else {
        return;
    };
    if let Ok(mut s) = seen.lock() {
        s.push((Instant::now(), req.clone()));
    }
    let reply = handler(&req);
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    if !reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        out += &format!("Content-Length: {}\r\n", reply.body.len());
    }
    for (k, v) in &reply.headers {
        out += &format!("{k}: {v}\r\n");
    }
    out += "\r\n";
    if stream.write_all(out.as_bytes()).is_err() {
        return;
    }
    let _ = stream.flush();
    if req.method != "HEAD" {
        match reply.per_byte {
            None => {
                if stream.write_all(&reply.body).is_err() {
                    return;
                }
            }
            Some(gap) => {
                for b in &reply.body {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    thread::sleep(gap);
                    if stream.write_all(std::slice::from_ref(b)).is_err() {
                        broken_off.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let _ = stream.flush();
                }
            }
        }
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut chunk = [0u8; 4096];
    while matches!(stream.read(&mut chunk), Ok(n) if n > 0) {}
}
