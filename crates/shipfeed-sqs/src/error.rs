//! SQS errors turned into the core [`Error`], with a kind that tells the source what to do:
//! `Config` stops it (wrong queue, wrong credentials), `Unavailable` is retried. What the
//! source does with any error, its own or an adapter's or the inbox's, is [`Disposition::of`].

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use shipfeed_core::{Error, ErrorClass, ErrorKind};

/// Where in a poll cycle an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Receiving from the queue.
    Receive,
    /// The adapter's verify and parse of one message.
    Normalize,
    /// Handing a batch to the inbox.
    Inbox,
}

/// What the source does after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// The message itself is the problem: hand it to the inbox as a dead letter and delete it
    /// once accepted (unless [`DeadLetterPolicy::LeaveForRedrive`](crate::DeadLetterPolicy)).
    DeadLetter,
    /// Leave the message(s) on the queue and go on: they come back after the visibility
    /// timeout (a failed receive is tried again after a pause).
    Leave,
    /// Leave the message(s) and stop the source with the error: nothing will succeed until
    /// the configuration changes.
    Stop,
}

impl Disposition {
    /// The one mapping from an error's kind and class to what happens to the messages.
    pub(crate) fn of(step: Step, error: &Error) -> Disposition {
        match (step, error.kind(), error.class()) {
            (Step::Normalize, ErrorKind::Payload, _) => Disposition::DeadLetter,
            // Not the message's fault (a misconfigured adapter): keep it for after the fix,
            // and keep serving the messages that do normalize.
            (Step::Normalize, _, _) => Disposition::Leave,
            (Step::Receive | Step::Inbox, _, ErrorClass::Temporary) => Disposition::Leave,
            (Step::Receive | Step::Inbox, _, ErrorClass::Permanent) => Disposition::Stop,
        }
    }
}

/// Error codes meaning "this queue does not exist" (query and JSON protocol spellings).
const MISSING_QUEUE: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.QueueDoesNotExist",
];

/// Error codes meaning "these credentials are not accepted".
const BAD_CREDENTIALS: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "UnrecognizedClient",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidSecurity",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "AuthFailure",
    "AccessDenied",
    "AccessDeniedException",
    "AWS.SimpleQueueService.AccessDenied",
];

/// Error codes worth retrying as they are.
const TRANSIENT: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "KmsThrottled",
    "AWS.SimpleQueueService.ServiceUnavailable",
];

/// What one failed call means for the source.
pub(crate) fn classify(
    operation: &str,
    queue: &str,
    code: Option<&str>,
    status: Option<u16>,
    detail: &str,
) -> Error {
    let code_text = code.unwrap_or("no error code");
    if code.is_some_and(|c| MISSING_QUEUE.contains(&c)) {
        return Error::new(
            ErrorKind::Config,
            format!(
                "{operation}: queue `{queue}` does not exist (check the queue URL or name, the \
                 region and the endpoint): {detail}"
            ),
        );
    }
    if code.is_some_and(|c| BAD_CREDENTIALS.contains(&c)) || matches!(status, Some(401 | 403)) {
        return Error::new(
            ErrorKind::Config,
            format!(
                "{operation}: the queue rejected the credentials ({code_text}); for Seven Senders \
                 use the shop API key as access key id and an empty secret: {detail}"
            ),
        );
    }
    let transient = code.is_some_and(|c| TRANSIENT.contains(&c))
        || status.is_some_and(|s| s == 429 || s >= 500)
        || code.is_none();
    let kind = if transient {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Config
    };
    Error::new(
        kind,
        format!("{operation} on `{queue}` failed ({code_text}): {detail}"),
    )
}

/// Converts an SDK error: service errors by their code, connection and timeout failures as
/// [`ErrorKind::Unavailable`], request construction failures as [`ErrorKind::Config`].
pub(crate) fn from_sdk<E>(operation: &str, queue: &str, error: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&error).to_string();
    match &error {
        SdkError::ConstructionFailure(_) => Error::new(
            ErrorKind::Config,
            format!("{operation}: the request could not be built: {detail}"),
        ),
        SdkError::ServiceError(service) => {
            let status = error.raw_response().map(|r| r.status().as_u16());
            classify(operation, queue, service.err().code(), status, &detail)
        }
        _ => {
            let status = error.raw_response().map(|r| r.status().as_u16());
            let code = error.code();
            if code.is_some() || status.is_some_and(|s| s < 500 && s != 429) {
                classify(operation, queue, code, status, &detail)
            } else {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("{operation} on `{queue}`: the queue could not be reached: {detail}"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_follow_kind_and_class() {
        let payload = Error::payload("not JSON");
        let config = Error::new(ErrorKind::Config, "an HMAC secret for an unsigned queue");
        let down = Error::new(ErrorKind::Unavailable, "store down");
        assert_eq!(
            Disposition::of(Step::Normalize, &payload),
            Disposition::DeadLetter
        );
        assert_eq!(
            Disposition::of(Step::Normalize, &config),
            Disposition::Leave
        );
        for step in [Step::Receive, Step::Inbox] {
            assert_eq!(Disposition::of(step, &down), Disposition::Leave, "{step:?}");
            assert_eq!(
                Disposition::of(step, &config),
                Disposition::Stop,
                "{step:?}"
            );
            assert_eq!(
                Disposition::of(step, &payload),
                Disposition::Stop,
                "{step:?}"
            );
        }
    }

    #[test]
    fn missing_queues_and_bad_credentials_are_config_errors_with_clear_messages() {
        for code in MISSING_QUEUE {
            let err = classify("ReceiveMessage", "q", Some(code), Some(400), "x");
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(
                err.to_string().contains("queue `q` does not exist"),
                "{err}"
            );
        }
        for code in BAD_CREDENTIALS {
            let err = classify("ReceiveMessage", "q", Some(code), Some(403), "x");
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(
                err.to_string().contains("rejected the credentials"),
                "{err}"
            );
        }
        let err = classify("ReceiveMessage", "q", None, Some(403), "x");
        assert!(
            err.to_string().contains("rejected the credentials"),
            "{err}"
        );
    }

    #[test]
    fn throttling_and_server_errors_are_temporary() {
        for (code, status) in [
            (Some("ThrottlingException"), Some(400)),
            (None, Some(503)),
            (Some("Whatever"), Some(500)),
            (None, None),
        ] {
            let err = classify("ReceiveMessage", "q", code, status, "x");
            assert_eq!(err.class(), ErrorClass::Temporary, "{code:?} {status:?}");
        }
        let err = classify(
            "ReceiveMessage",
            "q",
            Some("InvalidParameterValue"),
            Some(400),
            "x",
        );
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}
