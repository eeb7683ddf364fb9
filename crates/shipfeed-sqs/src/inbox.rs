//! Where the source hands its batches: the [`Inbox`] contract, and an inbox that writes JSON
//! lines (for `shipfeed consume`).

use std::io::{self, Write};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::json;
use shipfeed_core::{Error, ErrorKind, Output, RawDelivery};

/// One queue message, normalized (or not) by the adapter.
#[derive(Debug)]
pub struct SourcedDelivery {
    /// The SQS `MessageId`.
    pub message_id: String,
    /// The message as the adapter saw it: body, attributes as headers, `received_at`.
    pub delivery: RawDelivery,
    /// The adapter's result. An `Err` here is always [`ErrorKind::Payload`]: a dead letter to
    /// keep (other errors never reach the inbox; their messages stay on the queue).
    pub outcome: Result<Vec<Output>, Error>,
}

impl SourcedDelivery {
    /// Whether this is a message the adapter could not understand.
    pub fn is_dead_letter(&self) -> bool {
        self.outcome.is_err()
    }
}

/// What a source hands its batches to, before anything downstream of the store: the
/// service's store (and, later, its durable inbox), or JSON lines for `shipfeed consume`.
///
/// Contract: `Ok(())` means **every** item of the batch is durable (events and dead letters);
/// only then does the source delete the messages from the queue. An error of class
/// [`Temporary`](shipfeed_core::ErrorClass::Temporary) leaves the whole batch on the queue, to
/// come back after the visibility timeout (so an inbox must tolerate seeing an item again:
/// deduplicate on `event_id` / `message_id`). A permanent error stops the source.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Takes a batch durably.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] when the store cannot take the batch now; any other kind
    /// when it never will (the source stops).
    async fn accept(&self, batch: Vec<SourcedDelivery>) -> Result<(), Error>;
}

/// Writes each canonical [`Output`] as one JSON line to `out`, and each dead letter as one JSON
/// line (`{"dead_letter": {...}}`) to `dead_letters`; flushes both before acknowledging.
///
/// Durable in the sense of "handed to the writer and flushed": right for stdout piped into
/// another program or a file, not a database.
#[derive(Debug)]
pub struct JsonLinesInbox<W, D> {
    out: Mutex<W>,
    dead_letters: Mutex<D>,
}

impl JsonLinesInbox<io::Stdout, io::Stderr> {
    /// Events on stdout, dead letters on stderr.
    pub fn stdio() -> Self {
        JsonLinesInbox::new(io::stdout(), io::stderr())
    }
}

impl<W: Write + Send, D: Write + Send> JsonLinesInbox<W, D> {
    /// An inbox writing events to `out` and dead letters to `dead_letters`.
    pub fn new(out: W, dead_letters: D) -> Self {
        JsonLinesInbox {
            out: Mutex::new(out),
            dead_letters: Mutex::new(dead_letters),
        }
    }

    /// The writers back, e.g. to inspect what a test wrote.
    pub fn into_inner(self) -> (W, D) {
        let out = self.out.into_inner().unwrap_or_else(|p| p.into_inner());
        let dead = self
            .dead_letters
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        (out, dead)
    }

    fn write_batch(&self, batch: &[SourcedDelivery]) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let mut dead = self.dead_letters.lock().unwrap_or_else(|p| p.into_inner());
        for item in batch {
            match &item.outcome {
                Ok(outputs) => {
                    for output in outputs {
                        serde_json::to_writer(&mut *out, output)?;
                        out.write_all(b"\n")?;
                    }
                }
                Err(error) => {
                    serde_json::to_writer(&mut *dead, &dead_letter_value(item, error))?;
                    dead.write_all(b"\n")?;
                }
            }
        }
        out.flush()?;
        dead.flush()
    }
}

/// The JSON form of a dead letter: message id, receive time, error and the body as text.
pub fn dead_letter_value(item: &SourcedDelivery, error: &Error) -> serde_json::Value {
    json!({ "dead_letter": {
        "message_id": item.message_id,
        "received_at": item.delivery.received_at,
        "error": {
            "kind": format!("{:?}", error.kind()),
            "provider": error.provider().map(|p| p.as_str()),
            "path": error.path(),
            "message": error.message(),
        },
        "body": String::from_utf8_lossy(&item.delivery.body),
    }})
}

#[async_trait]
impl<W: Write + Send, D: Write + Send> Inbox for JsonLinesInbox<W, D> {
    async fn accept(&self, batch: Vec<SourcedDelivery>) -> Result<(), Error> {
        self.write_batch(&batch).map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("writing JSON lines failed: {e}"),
            )
            .with_source(e)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use shipfeed_core::doc_support::event;
    use shipfeed_core::Status;

    use super::*;

    #[tokio::test]
    async fn events_go_to_out_one_per_line_and_dead_letters_to_the_other_writer() {
        let inbox = JsonLinesInbox::new(Vec::new(), Vec::new());
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let good = SourcedDelivery {
            message_id: "m1".into(),
            delivery: RawDelivery::new("{}", at),
            outcome: Ok(vec![
                Output::Event(event("e1", "2024-01-01T00:00:00Z", Status::Delivered)),
                Output::Event(event("e2", "2024-01-01T00:00:00Z", Status::InTransit)),
            ]),
        };
        let bad = SourcedDelivery {
            message_id: "m2".into(),
            delivery: RawDelivery::new("nope", at),
            outcome: Err(Error::payload("not JSON").with_path("status")),
        };
        assert!(bad.is_dead_letter() && !good.is_dead_letter());
        inbox.accept(vec![good, bad]).await.unwrap();
        let (out, dead) = inbox.into_inner();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "event");
        assert_eq!(lines[1]["event_id"], "e2");
        let dead: serde_json::Value = serde_json::from_slice(&dead).unwrap();
        assert_eq!(dead["dead_letter"]["message_id"], "m2");
        assert_eq!(dead["dead_letter"]["error"]["path"], "status");
        assert_eq!(dead["dead_letter"]["body"], "nope");
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failing_writer_is_a_temporary_error() {
        let inbox = JsonLinesInbox::new(Broken, Vec::new());
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let item = SourcedDelivery {
            message_id: "m1".into(),
            delivery: RawDelivery::new("{}", at),
            outcome: Ok(vec![Output::Event(event(
                "e1",
                "2024-01-01T00:00:00Z",
                Status::Delivered,
            ))]),
        };
        let err = inbox.accept(vec![item]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
}
