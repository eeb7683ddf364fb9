//! `GET /v1/events`: the query of the pull feed (cursor, page size, filter), read and checked
//! apart from the handler so that a wrong value answers one clear 400.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use shipfeed_store::{Filter, FilterError};

/// The page size when the query gives none.
const DEFAULT_LIMIT: usize = 100;

/// The largest page size; larger ones are cut to it.
const MAX_LIMIT: usize = 1000;

/// What `GET /v1/events` was asked for.
#[derive(Debug)]
pub(crate) struct FeedQuery {
    /// The cursor: items after this `seq`.
    pub(crate) after: i64,
    /// At most this many items (1..=[`MAX_LIMIT`]).
    pub(crate) limit: usize,
    /// Which items (`provider`, `status`, `carrier`, `type`; repeated or comma-separated).
    pub(crate) filter: Filter,
}

impl FeedQuery {
    /// Reads the decoded query pairs. Parameters it does not know are left alone, as the feed
    /// always did; a value it cannot use is an error, never ignored.
    pub(crate) fn parse(pairs: &[(String, String)]) -> Result<Self, Refused> {
        let mut after = 0;
        let mut limit = DEFAULT_LIMIT;
        for (key, value) in pairs {
            match key.as_str() {
                "after" => after = number(key, value)?,
                "limit" => limit = number::<usize>(key, value)?.clamp(1, MAX_LIMIT),
                _ => {}
            }
        }
        let filter = Filter::from_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|error| refused(&error))?;
        Ok(FeedQuery {
            after,
            limit,
            filter,
        })
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, Refused> {
    value.parse().map_err(|_| {
        Refused(json!({
            "error": format!("`{key}` must be a whole number (0 or more), not `{value}`"),
            "parameter": key,
            "value": value,
        }))
    })
}

/// The 400 for a filter value: the message, and the parameter, the value and what is allowed
/// (`allowed` absent for carriers, which are open), for clients that show them.
fn refused(error: &FilterError) -> Refused {
    let mut body = json!({
        "error": error.to_string(),
        "parameter": error.dimension.as_str(),
        "value": error.value,
    });
    let allowed = error.allowed();
    if !allowed.is_empty() {
        body["allowed"] = json!(allowed);
    }
    Refused(body)
}

/// A query the feed cannot answer: a 400 with this JSON body.
#[derive(Debug)]
pub(crate) struct Refused(serde_json::Value);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(self.0)).into_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn cursor_limit_and_filter_are_read_together() {
        let query = FeedQuery::parse(&pairs(&[
            ("after", "12"),
            ("limit", "5000"),
            ("status", "delivered"),
            ("status", "out_for_delivery,attempt_failed"),
            ("unrelated", "x"),
        ]))
        .unwrap();
        assert_eq!((query.after, query.limit), (12, MAX_LIMIT));
        let expected =
            Filter::from_query([("status", "attempt_failed,delivered,out_for_delivery")]).unwrap();
        assert_eq!(query.filter, expected);
        let default = FeedQuery::parse(&[]).unwrap();
        assert_eq!((default.after, default.limit), (0, DEFAULT_LIMIT));
        assert!(default.filter.is_empty());
    }

    #[test]
    fn wrong_values_are_a_400() {
        for query in [
            &[("status", "shipped")][..],
            &[("type", "event,revisions")][..],
            &[("provider", "ups")][..],
            &[("carrier", " ")][..],
            &[("after", "-x")][..],
            &[("limit", "ten")][..],
        ] {
            let response = FeedQuery::parse(&pairs(query)).unwrap_err().into_response();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query:?}");
        }
    }
}
