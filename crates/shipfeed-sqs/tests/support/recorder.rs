//! A recording HTTP proxy in front of a real `moto_server`: it forwards every request
//! unchanged and logs, in order, which messages each `ReceiveMessage` handed out and which
//! deletes were asked for and confirmed. SQS offers no exact view of a queue (its counters are
//! *approximate*, and moto's are computed at two instants), so tests read deletes here instead.
//!
//! Std and `serde_json` only, so other crates' tests can include it with `#[path]`.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One thing the recorder saw, or a test noted, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A `ReceiveMessage` answer handed out this message.
    Received(String),
    /// A consumer asked to delete this message (logged before the request reaches moto).
    DeleteRequested(String),
    /// moto answered that this message was deleted.
    Deleted(String),
    /// A test's inbox is about to confirm this message (see [`Recorder::note`]).
    Confirmed(String),
}

#[derive(Default)]
struct State {
    events: Vec<Event>,
    /// Receipt handle -> message id, from every `ReceiveMessage` answer.
    receipts: HashMap<String, String>,
}

/// A running proxy; point the SQS client's endpoint at [`Recorder::endpoint`].
pub struct Recorder {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stopping: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Recorder {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Recorder {
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("upstream must be http://host:port, not {upstream}"))
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("recorder: no free port on 127.0.0.1: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let recorder = Recorder {
            endpoint: format!("http://127.0.0.1:{port}"),
            state: Arc::default(),
            stopping: Arc::default(),
            connections: Arc::default(),
        };
        let (state, stopping, connections) = (
            Arc::clone(&recorder.state),
            Arc::clone(&recorder.stopping),
            Arc::clone(&recorder.connections),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if let Ok(clone) = client.try_clone() {
                    lock(&connections).push(clone);
                }
                let (state, upstream) = (Arc::clone(&state), upstream.clone());
                std::thread::spawn(move || {
                    if let Err(error) = relay(client, &upstream, &state) {
                        eprintln!("recorder: connection ended: {error}");
                    }
                });
            }
        });
        recorder
    }

    /// Everything seen so far, in order.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.state).events.clone()
    }

    /// Logs `event` now, in the same order as what the proxy sees.
    pub fn note(&self, event: Event) {
        lock(&self.state).events.push(event);
    }

    /// The message ids moto confirmed as deleted, in order.
    pub fn deleted(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Deleted(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// The message ids whose delete was asked for, in order.
    pub fn delete_requests(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::DeleteRequested(id) => Some(id),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stopping`, and end the open connections.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
        for connection in lock(&self.connections).drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// One HTTP/1.1 message: the bytes as read (forwarded verbatim), and the decoded body.
struct Message {
    raw: Vec<u8>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body ran to the end of the stream: the connection cannot carry another message.
    until_eof: bool,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.until_eof
            || self
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one request or response; `None` at a clean end of the stream. A message with neither
/// `Content-Length` nor chunked encoding has a body only if it is a response (until EOF).
fn read_message(stream: &mut impl BufRead, is_response: bool) -> io::Result<Option<Message>> {
    let mut raw = Vec::new();
    let mut headers = Vec::new();
    let mut first = true;
    loop {
        let start = raw.len();
        if stream.read_until(b'\n', &mut raw)? == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated head",
            ));
        }
        let line = String::from_utf8_lossy(&raw[start..]).trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        if !first {
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        first = false;
    }
    let mut message = Message {
        raw,
        headers,
        body: Vec::new(),
        until_eof: false,
    };
    let chunked = message
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = message
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    if chunked {
        loop {
            let start = message.raw.len();
            stream.read_until(b'\n', &mut message.raw)?;
            let size_line = String::from_utf8_lossy(&message.raw[start..]).to_string();
            let size_hex = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let start = message.raw.len();
                    if stream.read_until(b'\n', &mut message.raw)? == 0 {
                        break;
                    }
                    if message.raw[start..].trim_ascii().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk)?;
            message.body.extend_from_slice(&chunk[..size]);
            message.raw.extend_from_slice(&chunk);
        }
    } else if let Some(length) = length {
        let mut body = vec![0; length];
        stream.read_exact(&mut body)?;
        message.raw.extend_from_slice(&body);
        message.body = body;
    } else if is_response {
        stream.read_to_end(&mut message.body)?;
        message.raw.extend_from_slice(&message.body);
        message.until_eof = true;
    }
    Ok(Some(message))
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

/// Forwards the requests of one client connection, one at a time, logging what matters.
fn relay(client: TcpStream, upstream_addr: &str, state: &Mutex<State>) -> io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    while let Some(request) = read_message(&mut from_client, false)? {
        let target = request
            .header("x-amz-target")
            .unwrap_or("")
            .trim_start_matches("AmazonSQS.")
            .to_owned();
        let asked = json(&request.body);
        // Which message each delete entry (by its `Id`) is for, logged before moto sees it.
        let mut deletes: Vec<(String, String)> = Vec::new();
        if target == "DeleteMessageBatch" || target == "DeleteMessage" {
            let mut state = lock(state);
            let entries: Vec<(String, String)> = if target == "DeleteMessage" {
                asked["ReceiptHandle"]
                    .as_str()
                    .map(|r| (String::new(), r.to_owned()))
                    .into_iter()
                    .collect()
            } else {
                asked["Entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        Some((
                            e["Id"].as_str()?.to_owned(),
                            e["ReceiptHandle"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            };
            for (entry, receipt) in entries {
                let message_id = state
                    .receipts
                    .get(&receipt)
                    .cloned()
                    .unwrap_or_else(|| format!("<unknown receipt {receipt}>"));
                state
                    .events
                    .push(Event::DeleteRequested(message_id.clone()));
                deletes.push((entry, message_id));
            }
        }

        // A fresh connection to moto per request: nothing to track about its keep-alive.
        let to_upstream = TcpStream::connect(upstream_addr)?;
        let mut from_upstream = BufReader::new(to_upstream.try_clone()?);
        (&to_upstream).write_all(&request.raw)?;
        let response = read_message(&mut from_upstream, true)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "moto closed without answering",
            )
        })?;
        drop(from_upstream);
        drop(to_upstream);
        let status_ok = response.raw.get(8..13) == Some(b" 200 ".as_slice());

        if status_ok {
            let answer = json(&response.body);
            let mut state = lock(state);
            match target.as_str() {
                "ReceiveMessage" => {
                    let messages: Vec<(String, String)> = answer["Messages"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| {
                            Some((
                                m["MessageId"].as_str()?.to_owned(),
                                m["ReceiptHandle"].as_str()?.to_owned(),
                            ))
                        })
                        .collect();
                    for (message_id, receipt) in messages {
                        state.receipts.insert(receipt, message_id.clone());
                        state.events.push(Event::Received(message_id));
                    }
                }
                "DeleteMessage" => {
                    for (_, message_id) in deletes {
                        state.events.push(Event::Deleted(message_id));
                    }
                }
                "DeleteMessageBatch" => {
                    let ok: Vec<&str> = answer["Successful"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|item| item["Id"].as_str())
                        .collect();
                    for (entry, message_id) in deletes {
                        if ok.contains(&entry.as_str()) {
                            state.events.push(Event::Deleted(message_id));
                        }
                    }
                }
                _ => {}
            }
        }

        to_client.write_all(&response.raw)?;
        to_client.flush()?;
        if response.closes() || request.closes() {
            break;
        }
    }
    Ok(())
}
