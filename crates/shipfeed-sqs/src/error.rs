//! SQS errors turned into the core [`Error`], with a kind that tells the source what to do:
//! `Config` stops it (wrong queue, wrong credentials), `Unavailable` is retried.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use shipfeed_core::{Error, ErrorKind};

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
    use shipfeed_core::ErrorClass;

    use super::*;

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
