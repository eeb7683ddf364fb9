//! A real HTTP webhook receiver for the signed HTTP push tests (Standard Webhooks).
//!
//! [`WebhookReceiver`] listens on `127.0.0.1` and verifies every request with the
//! [`standardwebhooks`] crate: an implementation independent of shipfeed's signer, so a push test
//! checks the signatures against the specification rather than against shipfeed's own code. Every
//! request is recorded ([`Received`]) and answered what the test scripts ([`Reply`]); the receiver
//! can be taken down (its port refuses connections) and brought up again on the same port.
//!
//! Tests wait for requests with [`WebhookReceiver::wait_until`], woken on every recorded request
//! (no polling); its timeout only guards a test that would otherwise hang.
//!
//! Note that `standardwebhooks` rejects a `webhook-timestamp` more than 5 minutes away from the
//! receiver's clock, and only verifies UTF-8 payloads.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use standardwebhooks::Webhook;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

/// The path the receiver serves (`POST`).
const PATH: &str = "/hook";

/// How long [`WebhookReceiver::set_down`] waits for the open connections to close before it
/// panics (a failure guard: they close as soon as they notice, well within it).
const CLOSE_GUARD: Duration = Duration::from_secs(10);

/// A deterministic Standard Webhooks secret for tests: `whsec_` and the base64 of 32 bytes
/// derived from `seed` (different seeds give different secrets).
pub fn generate_secret(seed: u8) -> String {
    let mut key = [0_u8; 32];
    for (i, byte) in (0_u8..).zip(key.iter_mut()) {
        *byte = seed.wrapping_add(i.wrapping_mul(151)).wrapping_add(0x5a);
    }
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The scripted answer to one request (see [`WebhookReceiver::set_script`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `200 OK`.
    Ok,
    /// This status, with an empty body (an invalid status code is answered 500).
    Status(u16),
    /// This status (429 or 503, typically) with `Retry-After: retry_after_secs`.
    Throttle {
        /// The status answered.
        status: u16,
        /// The `Retry-After` header's value, in seconds.
        retry_after_secs: u64,
    },
    /// Sleeps that long, then answers 200: exceeds the sender's per-attempt timeout. While it
    /// sleeps the request is recorded with `answered: 0`, and it stays 0 when the receiver is
    /// taken down (or the sender hangs up, if the server notices) before the sleep ends.
    Stall(Duration),
}

/// A request the receiver got, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The `webhook-id` header (empty when missing or not ASCII).
    pub webhook_id: String,
    /// The `webhook-timestamp` header, seconds since the epoch (0 when missing or invalid).
    pub timestamp: i64,
    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub body: Value,
    /// The body's exact bytes.
    pub raw_body: Vec<u8>,
    /// The space-separated entries of the `webhook-signature` header (`v1,<base64>` each).
    pub signatures: Vec<String>,
    /// Whether one of the receiver's secrets verifies the request (`standardwebhooks`); an
    /// unverified request is answered 401 without consulting the script.
    pub verified: bool,
    /// 1 for the first request carrying this `webhook-id`, 2 for the second, and so on (every
    /// request counts, verified or not).
    pub attempt: u32,
    /// The status answered; 0 while a [`Reply::Stall`] sleeps (or when it was cut short).
    pub answered: u16,
    /// When the request (its whole body) was received.
    pub received_at: Instant,
}

impl Received {
    /// Whether it was answered with a 2xx status.
    pub fn is_delivered(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

/// The answer script: called once per verified request.
type Script = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// What the server's handlers and the test share.
struct Shared {
    /// A request verifies when any of these does.
    verifiers: Vec<Webhook>,
    script: Mutex<Script>,
    /// The attempt counters per `webhook-id`. Held while a request is numbered, scripted and
    /// recorded, so the arrival order, the attempt numbers and the record order agree (the
    /// script may call the receiver: the record lock is not held while it runs).
    attempts: Mutex<HashMap<String, u32>>,
    /// Every request, in arrival order.
    records: Mutex<Vec<Received>>,
    /// Notified on every change of `records`.
    changed: Notify,
}

impl Shared {
    fn records(&self) -> MutexGuard<'_, Vec<Received>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `record` and returns its index.
    fn record(&self, record: Received) -> usize {
        let index = {
            let mut records = self.records();
            records.push(record);
            records.len() - 1
        };
        self.changed.notify_waiters();
        index
    }

    fn set_answered(&self, index: usize, status: u16) {
        if let Some(record) = self.records().get_mut(index) {
            record.answered = status;
        }
        self.changed.notify_waiters();
    }
}

/// One serving period (between two `set_down` calls).
struct Serving {
    task: JoinHandle<()>,
    /// `true`: the connections of this period fail their I/O and the stalled handlers give up.
    kill: watch::Sender<bool>,
    /// Closed when the listener and every connection of this period are dropped.
    open: mpsc::Receiver<()>,
}

/// A Standard Webhooks endpoint on `127.0.0.1` (`POST /hook`) recording what it receives and
/// answering what the test scripts. Runs on the current tokio runtime.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    serving: Mutex<Option<Serving>>,
}

impl fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("url", &self.url())
            .field("secrets", &self.shared.verifiers.len())
            .field("received", &self.shared.records().len())
            .finish()
    }
}

impl WebhookReceiver {
    /// Starts a receiver verifying with `secret` (`whsec_<base64>`), on a free local port.
    ///
    /// # Panics
    /// When the secret is not valid base64 or no local port can be bound.
    pub async fn start(secret: &str) -> WebhookReceiver {
        WebhookReceiver::start_with_secrets(&[secret]).await
    }

    /// Starts a receiver where a request verifies when any of `secrets` verifies it (key
    /// rotation: a sender signing with the old and the new secret passes either receiver).
    ///
    /// # Panics
    /// When `secrets` is empty, one is not valid base64, or no local port can be bound.
    pub async fn start_with_secrets(secrets: &[&str]) -> WebhookReceiver {
        assert!(
            !secrets.is_empty(),
            "WebhookReceiver: at least one secret is needed"
        );
        let verifiers = secrets
            .iter()
            .map(|secret| {
                Webhook::new(secret).unwrap_or_else(|e| {
                    panic!("WebhookReceiver: invalid Standard Webhooks secret {secret:?}: {e}")
                })
            })
            .collect();
        let default: Script = Arc::new(|_: &Received| Reply::Ok);
        let shared = Arc::new(Shared {
            verifiers,
            script: Mutex::new(default),
            attempts: Mutex::new(HashMap::new()),
            records: Mutex::new(Vec::new()),
            changed: Notify::new(),
        });
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .unwrap_or_else(|e| panic!("WebhookReceiver: bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("WebhookReceiver: local address: {e}"));
        let serving = serve(listener, &shared);
        WebhookReceiver {
            addr,
            shared,
            serving: Mutex::new(Some(serving)),
        }
    }

    /// `http://127.0.0.1:<port>/hook`: the same across [`set_down`](Self::set_down) cycles.
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// Replaces the answer script, called once per verified request with its record (whose
    /// `answered` is not set yet). The default answers [`Reply::Ok`] to everything.
    pub fn set_script(&self, script: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        *self
            .shared
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(script);
    }

    /// `true`: takes the receiver down. Its port refuses connections, and when this returns
    /// every open connection is closed (keep-alive ones included; a stalled request is cut
    /// without an answer). `false`: serves again on the same port. Either is a no-op when the
    /// receiver already is in that state.
    ///
    /// As after a real server restart, a sender keeping connections alive may have a pooled
    /// connection that `set_down(true)` closed and that it has not noticed yet: its next request
    /// on it fails (and drops it), even when the receiver is up again by then.
    ///
    /// # Panics
    /// When the port cannot be bound again (after a few tries), or the connections do not
    /// close within 10 s.
    pub async fn set_down(&self, down: bool) {
        if down {
            let serving = self.lock_serving().take();
            let Some(Serving {
                task,
                kill,
                mut open,
            }) = serving
            else {
                return;
            };
            kill.send_replace(true);
            task.abort();
            let _ = task.await; // cancelled: the listener is dropped
            if tokio::time::timeout(CLOSE_GUARD, open.recv())
                .await
                .is_err()
            {
                panic!(
                    "WebhookReceiver::set_down(true): connections still open after {CLOSE_GUARD:?}"
                );
            }
        } else {
            if self.lock_serving().is_some() {
                return;
            }
            let listener = relisten(self.addr).await;
            let serving = serve(listener, &self.shared);
            *self.lock_serving() = Some(serving);
        }
    }

    /// Every request received, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.records().clone()
    }

    /// The requests answered with a 2xx status, in arrival order.
    pub fn delivered(&self) -> Vec<Received> {
        self.shared
            .records()
            .iter()
            .filter(|r| r.is_delivered())
            .cloned()
            .collect()
    }

    /// Waits until `cond` holds for the requests received so far (re-checked on every recorded
    /// request or answer).
    ///
    /// # Panics
    /// When `timeout` passes first, with `what` and a summary of what was received. The timeout
    /// is a guard against a hanging test, not a timing assertion: make it generous.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&[Received]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable(); // registered before the check: no change is missed
            let records = self.received();
            if cond(&records) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "WebhookReceiver: timed out after {timeout:?} waiting until {what}; {}",
                    summary(&self.received())
                );
            }
        }
    }

    fn lock_serving(&self) -> MutexGuard<'_, Option<Serving>> {
        self.serving.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(serving) = self.lock_serving().take() {
            serving.kill.send_replace(true);
            serving.task.abort();
        }
    }
}

/// Counts and the last few requests, for a failure message.
fn summary(records: &[Received]) -> String {
    let verified = records.iter().filter(|r| r.verified).count();
    let delivered = records.iter().filter(|r| r.is_delivered()).count();
    let last: Vec<String> = records
        .iter()
        .rev()
        .take(8)
        .rev()
        .map(|r| {
            format!(
                "{}#{}{} -> {}",
                r.webhook_id,
                r.attempt,
                if r.verified { "" } else { " (unverified)" },
                r.answered
            )
        })
        .collect();
    format!(
        "received {} ({verified} verified, {} unverified), delivered {delivered}; last: [{}]",
        records.len(),
        records.len() - verified,
        last.join(", ")
    )
}

/// A listening socket with `SO_REUSEADDR`, so the port can be bound again right after the
/// receiver is taken down (its closed connections linger in `TIME_WAIT`).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds `addr` again, retrying a few times (a socket of the previous period may still hold it).
async fn relisten(addr: SocketAddr) -> TcpListener {
    const TRIES: u32 = 20;
    let mut tries = 0;
    loop {
        match listen(addr) {
            Ok(listener) => return listener,
            Err(e) if tries + 1 >= TRIES => {
                panic!("WebhookReceiver::set_down(false): bind {addr} again: {e} ({TRIES} tries)")
            }
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What one serving period's handlers see.
#[derive(Clone)]
struct Period {
    shared: Arc<Shared>,
    kill: watch::Receiver<bool>,
}

/// Serves `listener` on a new task until the returned period is ended.
fn serve(listener: TcpListener, shared: &Arc<Shared>) -> Serving {
    let (kill, kill_rx) = watch::channel(false);
    let (open_tx, open) = mpsc::channel(1);
    let period = Period {
        shared: Arc::clone(shared),
        kill: kill_rx.clone(),
    };
    let router = axum::Router::new()
        .route(PATH, axum::routing::post(hook))
        .with_state(period);
    let listener = KillableListener {
        inner: listener,
        kill: kill_rx,
        open: open_tx,
    };
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Serving { task, kill, open }
}

/// `POST /hook`: verify, number, script, record, answer.
async fn hook(State(period): State<Period>, headers: HeaderMap, body: Bytes) -> Response {
    let received_at = Instant::now();
    let shared = &period.shared;
    let verified = shared
        .verifiers
        .iter()
        .any(|wh| wh.verify(&body, &headers).is_ok());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let webhook_id = header(standardwebhooks::HEADER_WEBHOOK_ID)
        .unwrap_or_default()
        .to_owned();
    let mut record = Received {
        timestamp: header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP)
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw_body: body.to_vec(),
        signatures: header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE)
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        verified,
        attempt: 0,
        answered: 0,
        received_at,
        webhook_id,
    };

    let (reply, index) = {
        let mut attempts = shared
            .attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let attempt = attempts.entry(record.webhook_id.clone()).or_insert(0);
        *attempt += 1;
        record.attempt = *attempt;
        let reply = if verified {
            let script = Arc::clone(&shared.script.lock().unwrap_or_else(PoisonError::into_inner));
            Some(script(&record))
        } else {
            None
        };
        record.answered = match reply {
            None => 401,
            Some(Reply::Ok) => 200,
            Some(Reply::Status(status) | Reply::Throttle { status, .. }) => status_code(status),
            Some(Reply::Stall(_)) => 0,
        };
        (reply, shared.record(record))
    };

    match reply {
        None => StatusCode::UNAUTHORIZED.into_response(),
        Some(Reply::Ok) => StatusCode::OK.into_response(),
        Some(Reply::Status(status)) => status_of(status).into_response(),
        Some(Reply::Throttle {
            status,
            retry_after_secs,
        }) => {
            let mut response = status_of(status).into_response();
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs),
            );
            response
        }
        Some(Reply::Stall(duration)) => {
            let mut kill = period.kill.clone();
            tokio::select! {
                () = tokio::time::sleep(duration) => {
                    shared.set_answered(index, 200);
                    StatusCode::OK.into_response()
                }
                _ = kill.wait_for(|killed| *killed) => {
                    StatusCode::SERVICE_UNAVAILABLE.into_response() // never written: it is down
                }
            }
        }
    }
}

fn status_of(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn status_code(status: u16) -> u16 {
    status_of(status).as_u16()
}

/// The receiver's listener: its connections fail their I/O once the period is killed, and each
/// holds a sender of the period's `open` channel (closed when they are all gone).
struct KillableListener {
    inner: TcpListener,
    kill: watch::Receiver<bool>,
    open: mpsc::Sender<()>,
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let mut kill = self.kill.clone();
                    let killed = Box::pin(async move {
                        let _ = kill.wait_for(|killed| *killed).await;
                    });
                    let stream = KillableStream {
                        inner: stream,
                        killed,
                        dead: false,
                        _open: self.open.clone(),
                    };
                    return (stream, addr);
                }
                // e.g. too many open files: let some connections close first
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection that fails its reads and writes once its period is killed (waking a
/// connection idle in keep-alive, so it closes).
struct KillableStream {
    inner: TcpStream,
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
    dead: bool,
    _open: mpsc::Sender<()>,
}

impl KillableStream {
    /// `Some(error)` once the period is killed (registering `cx` to be woken when it is).
    fn down(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        self.dead.then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the webhook receiver is down",
            )
        })
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.down(cx) {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.inner).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.down(cx) {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.down(cx) {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.inner).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
