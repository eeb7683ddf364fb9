//! The OpenAPI 3.1 document of the HTTP API: `GET /openapi.json`, committed as
//! `schema/openapi.json` (`cargo xtask fixtures` writes it, `--check` fails when it is stale).
//!
//! It is generated, never written by hand, from two sources:
//!
//! - **the route table** (`routes` in the crate root): every route the router serves, with
//!   its method, path, who may call it and the function describing it here. The router is
//!   built from that table and nothing else (plus the catch-all 404 under `/v1`), and so is
//!   the document's `paths`: a route cannot be served without being described, nor described
//!   without being served.
//! - **the types' JSON Schemas** (schemars, JSON Schema 2020-12, which OpenAPI 3.1 takes as
//!   it is): every response body's schema is a component under `#/components/schemas/`,
//!   generated from the type the handler serializes (or, for the envelopes the handlers build
//!   with `json!`, from a type of this module that mirrors it; the tests validate real
//!   responses against the document).
//!
//! The paths are built with `utoipa`'s OpenAPI model; the component schemas are schemars'
//! output, put into the document as they are (utoipa's schema model would have to translate
//! them, and lose keywords such as `const`).

use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter};
use schemars::JsonSchema;
use serde_json::{json, Value};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required, Schema,
};

use crate::api_auth::Scope;

/// The name of the bearer token's security scheme in the document.
pub const BEARER_AUTH: &str = "bearerAuth";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone.
    Open,
    /// The endpoint's provider: authenticated by its own signature or credentials, no API
    /// token.
    Provider,
    /// Anyone, unless `[api] protect_metrics` (then a `read` token).
    Metrics,
    /// A bearer token with this scope (when any `[[api_token]]` is configured).
    Token(Scope),
}

/// The methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    /// `GET` (axum answers `HEAD` with it too).
    Get,
    /// `POST`.
    Post,
}

impl Verb {
    /// The method's name, as in an HTTP request.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
        }
    }

    fn http_method(self) -> HttpMethod {
        match self {
            Verb::Get => HttpMethod::Get,
            Verb::Post => HttpMethod::Post,
        }
    }
}

/// One route of the HTTP API: what the router serves and what the document says of it.
pub(crate) struct Route<S> {
    /// Its method.
    pub(crate) verb: Verb,
    /// Its path, in axum's syntax (`{name}`), which is OpenAPI's too.
    pub(crate) path: &'static str,
    /// Who may call it.
    pub(crate) access: Access,
    /// Its handler, for `verb` only.
    pub(crate) handler: MethodRouter<S>,
    /// Its operation in the document (security and the answers to refused tokens are added
    /// from `access`).
    describe: fn() -> OperationBuilder,
}

impl<S: Clone + Send + Sync + 'static> Route<S> {
    /// A route answering `verb` on `path` with `handler`, described by `describe`.
    pub(crate) fn new<H, T>(
        verb: Verb,
        path: &'static str,
        access: Access,
        handler: H,
        describe: fn() -> OperationBuilder,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        Route {
            verb,
            path,
            access,
            handler: axum::routing::on(verb.filter(), handler),
            describe,
        }
    }

    /// Its operation, with the security its access needs.
    fn operation(&self) -> OperationBuilder {
        let operation = (self.describe)();
        match self.access {
            Access::Open | Access::Provider => operation,
            Access::Metrics => operation
                // Either no token (the default) or a read token (`protect_metrics`).
                .security(SecurityRequirement::default())
                .security(SecurityRequirement::new(BEARER_AUTH, ["read"]))
                .response(
                    "401",
                    error("No valid bearer token (only with `protect_metrics`)."),
                ),
            Access::Token(scope) => operation
                .security(SecurityRequirement::new(BEARER_AUTH, [scope.as_str()]))
                .response(
                    "401",
                    error(
                        "No `Authorization: Bearer <token>` header, a malformed one, or an \
                         unknown token (with a `WWW-Authenticate: Bearer` challenge).",
                    ),
                )
                .response(
                    "403",
                    error(&format!(
                        "The token lacks the `{}` scope (the challenge says \
                         `error=\"insufficient_scope\"`).",
                        scope.as_str()
                    )),
                ),
        }
    }
}

/// The OpenAPI document of `routes`, pretty-printed with a final newline.
///
/// # Errors
/// When the document cannot be serialized (it always can; the error is passed on rather
/// than assumed away).
pub(crate) fn document<S: Clone + Send + Sync + 'static>(
    routes: &[Route<S>],
) -> Result<String, serde_json::Error> {
    let mut paths = PathsBuilder::new();
    for route in routes {
        let operation = route.operation().build();
        paths = paths.path(
            route.path,
            PathItem::new(route.verb.http_method(), operation),
        );
    }
    let components = ComponentsBuilder::new()
        .security_scheme(
            BEARER_AUTH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An `[[api_token]]` of the configuration. Its scopes are `read` and \
                         `admin` (which includes `read`); the scope an operation needs is in \
                         its security requirement. With no `[[api_token]]` configured, the \
                         API is open (allowed on a loopback address only).",
                    ))
                    .build(),
            ),
        )
        .build();
    let tags = [
        (
            "webhooks",
            "Deliveries from the providers (their own authentication).",
        ),
        ("feed", "The canonical feed and what it holds."),
        (
            "operations",
            "The pipeline's state: deliveries, dead letters (and their replay), drift, \
             alerts; the audit log of operators' actions.",
        ),
        (
            "subscriptions",
            "The configured subscriptions: their cursors and states; an HTTP push \
             subscription's parked messages, pause, resume and redelivery.",
        ),
        ("service", "Health, readiness, metrics and this document."),
    ]
    .into_iter()
    .map(|(name, description)| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    });
    let openapi = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("shipfeed")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Shipment-tracking webhooks in, one canonical, verified, deduplicated and \
                     ordered feed out. Errors are JSON `{\"error\": \"...\"}` unless said \
                     otherwise; any request taking longer than 8 s is answered 503.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .tags(Some(tags))
        .build();
    let mut value = serde_json::to_value(&openapi)?;
    if let Some(components) = value.get_mut("components").and_then(Value::as_object_mut) {
        components.insert("schemas".to_owned(), Value::Object(component_schemas()));
    }
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    Ok(text)
}

/// The JSON Schemas of every response body, by name (and of what they refer to), with their
/// references pointing at `#/components/schemas/`.
fn component_schemas() -> serde_json::Map<String, Value> {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    generator.subschema_for::<WebhookAnswer>();
    generator.subschema_for::<ErrorBody>();
    generator.subschema_for::<EventsPage>();
    generator.subschema_for::<AlertsPage>();
    generator.subschema_for::<ShipmentsAnswer>();
    generator.subschema_for::<StatusAnswer>();
    generator.subschema_for::<DeadLettersPage>();
    generator.subschema_for::<shipfeed_store::DeliveryStatus>();
    generator.subschema_for::<RevisionsAnswer>();
    generator.subschema_for::<shipfeed_store::DriftReport>();
    generator.subschema_for::<shipfeed::Provider>();
    generator.subschema_for::<SubscriptionsAnswer>();
    generator.subschema_for::<MessagesPage>();
    generator.subschema_for::<shipfeed_store::SubscriptionControl>();
    generator.subschema_for::<RedeliverAnswer>();
    generator.subschema_for::<crate::ReplayRequest>();
    generator.subschema_for::<shipfeed_projector::ReplayReport>();
    generator.subschema_for::<AuditPage>();
    generator.take_definitions(true)
}

// The envelopes the handlers build with `json!`, as types for their schemas only. The tests
// validate the real answers against them.

/// The answer to a webhook delivery that was stored (or a provider's endpoint probe).
#[derive(JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
enum WebhookAnswer {
    /// Stored durably, before this answer: its inbox sequence number
    /// (`GET /v1/deliveries/{seq}`).
    Accepted {
        /// The delivery's inbox `seq`.
        delivery_seq: i64,
    },
    /// The provider's endpoint probe: answered, stored nowhere.
    Probe,
}

/// An error.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: errors are built with `json!`")]
struct ErrorBody {
    /// What went wrong (never a credential).
    error: String,
}

/// A page of the feed.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct EventsPage {
    /// The items after the cursor, in cursor order.
    events: Vec<shipfeed_store::FeedItem>,
    /// The `after` of the next page: the last item's `seq` (the `after` asked for when the
    /// page is empty).
    next_cursor: i64,
}

/// A page of the open alerts.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct AlertsPage {
    /// Open alerts (raised, not yet cleared), by `alert_id`.
    alerts: Vec<shipfeed_store::Alert>,
    /// The `after` of the next page; `null` after the last one.
    next: Option<String>,
}

/// The shipments a tracking number names (several when carriers share numbers).
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct ShipmentsAnswer {
    /// Each shipment's state and timeline.
    shipments: Vec<shipfeed_store::ShipmentView>,
}

/// Where the pipeline is.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct StatusAnswer {
    /// The projector's position against the inbox.
    projector: ProjectorStatus,
}

/// The projector's position against the inbox.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct ProjectorStatus {
    /// The inbox `seq` it has projected up to.
    cursor: i64,
    /// Deliveries stored but not yet projected.
    lag_deliveries: i64,
    /// When the oldest of them arrived (`null`: none waits).
    oldest_unprojected_at: Option<chrono::DateTime<chrono::Utc>>,
    /// How long the oldest of them has waited, in seconds (0 when none waits).
    lag_seconds: f64,
}

/// A page of dead letters.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct DeadLettersPage {
    /// Dead letters after the cursor, by `delivery_seq`.
    dead_letters: Vec<shipfeed_store::DeadLetter>,
}

/// Every stored version of an event.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct RevisionsAnswer {
    /// The event.
    event_id: String,
    /// Its versions, oldest first.
    revisions: Vec<Revision>,
}

/// One stored version of an event.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct Revision {
    /// 1, 2, ...
    revision: i64,
    /// The delivery it came from.
    delivery_seq: i64,
    /// The event as it was in that version.
    event: shipfeed::TrackingEvent,
}

/// The configured subscriptions.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct SubscriptionsAnswer {
    /// Each one, in configuration order (the `sink` setting's last).
    subscriptions: Vec<crate::SubscriptionSummary>,
}

/// A page of an HTTP push subscription's parked messages.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct MessagesPage {
    /// Messages after the cursor, by `seq`, without their bodies.
    messages: Vec<shipfeed_store::PushMessage>,
    /// The `after` of the next page: the last message's `seq` (the `after` asked for when the
    /// page is empty).
    next_cursor: i64,
}

/// A page of the audit log.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct AuditPage {
    /// Entries before the cursor, newest (greatest `id`) first.
    entries: Vec<shipfeed_store::AuditEntry>,
    /// The `before` of the next page; `null` after the last one.
    next: Option<i64>,
}

/// What a redelivery put back on schedule.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: the handler answers with `json!`")]
struct RedeliverAnswer {
    /// How many exhausted messages are due again.
    redelivered: u64,
}

// Building blocks of the operations.

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// A JSON answer of component schema `name`.
fn json_response(description: &str, name: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(schema_ref(name))).build(),
    )
}

/// A plain-text answer.
fn text_response(description: &str, content_type: &str, example: &str) -> ResponseBuilder {
    let text = ObjectBuilder::new().schema_type(Type::String).build();
    ResponseBuilder::new().description(description).content(
        content_type,
        ContentBuilder::new()
            .schema(Some(text))
            .example(Some(json!(example)))
            .build(),
    )
}

/// A JSON error answer.
fn error(description: &str) -> ResponseBuilder {
    json_response(description, "ErrorBody")
}

fn unavailable() -> ResponseBuilder {
    error("The store is unavailable, or the request took longer than 8 s; retry later.")
}

fn bad_query() -> ResponseBuilder {
    ResponseBuilder::new()
        .description("A query parameter is not of its type (axum's plain-text rejection).")
}

fn integer(format: KnownFormat) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(format)))
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn path_param(name: &str, description: &str, schema: impl Into<RefOr<Schema>>) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
}

fn query_param(
    name: &str,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
}

/// `limit`: 1 to 1000 items, 100 by default (values out of range are clamped).
fn limit_param() -> ParameterBuilder {
    query_param(
        "limit",
        "How many items at most: 1 to 1000 (values out of that range are clamped).",
        integer(KnownFormat::Int64)
            .minimum(Some(0))
            .default(Some(json!(100))),
    )
}

/// The feed's filters (`provider`, `status`, `carrier`, `type`), their allowed values taken
/// from the filter itself so that the document cannot list others.
fn filter_params() -> Vec<ParameterBuilder> {
    use shipfeed_store::Dimension;
    [
        Dimension::Provider,
        Dimension::Status,
        Dimension::Carrier,
        Dimension::Type,
    ]
    .into_iter()
    .map(|dimension| {
        let allowed = dimension.allowed();
        let values = if allowed.is_empty() {
            "any carrier slug".to_owned()
        } else {
            format!("one of `{}`", allowed.join("`, `"))
        };
        query_param(
            dimension.as_str(),
            &format!(
                "Only items with this {} ({values}); repeated or comma-separated for several.",
                dimension.as_str()
            ),
            string(),
        )
    })
    .collect()
}

/// `after`: an integer cursor, 0 by default.
fn cursor_param(description: &str) -> ParameterBuilder {
    query_param(
        "after",
        description,
        integer(KnownFormat::Int64).default(Some(json!(0))),
    )
}

fn subscription_param() -> ParameterBuilder {
    path_param(
        "name",
        "The `name` of a `[[subscription]]` of the configuration.",
        string(),
    )
}

fn unknown_subscription() -> ResponseBuilder {
    error("No subscription of that name is configured.")
}

fn not_push() -> ResponseBuilder {
    error("The subscription is not of kind `http`: it has no state to change and parks nothing.")
}

fn seq_param(description: &str) -> ParameterBuilder {
    path_param("seq", description, integer(KnownFormat::Int64))
}

fn operation(id: &str, tag: &str, summary: &str, description: &str) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .tag(tag)
        .summary(Some(summary))
        .description(Some(description))
}

/// The operations, one function per route (named in the route table).
pub(crate) mod describe {
    use super::*;

    /// `POST /webhooks/{endpoint}`.
    pub(crate) fn webhook() -> OperationBuilder {
        operation(
            "receiveDelivery",
            "webhooks",
            "Receive a provider's delivery",
            "Verifies the delivery with the endpoint's provider authentication (signature, \
             Basic, fixed token or JWT; not an API token), stores it raw and durably, and only \
             then answers. Projection happens afterwards: `GET /v1/deliveries/{seq}` says \
             where the delivery is. A provider's endpoint probe is answered 200 \
             `{\"status\": \"probe\"}` and stored nowhere.",
        )
        .parameter(path_param(
            "endpoint",
            "The `name` of an `[[endpoint]]` of the configuration.",
            string(),
        ))
        .request_body(Some(
            utoipa::openapi::request_body::RequestBodyBuilder::new()
                .description(Some(
                    "The provider's payload, exactly as it sends it (verified over these bytes).",
                ))
                .content(
                    "application/json",
                    ContentBuilder::new().build(),
                )
                .required(Some(Required::True))
                .build(),
        ))
        .response(
            "200",
            json_response("Stored (or a probe answered).", "WebhookAnswer"),
        )
        .response(
            "401",
            error("Not authentic: a missing or wrong signature or credential, or no secret configured (fail closed). Nothing stored."),
        )
        .response("404", error("No endpoint of that name."))
        .response(
            "413",
            ResponseBuilder::new()
                .description("The body is larger than `body_limit_bytes`. Nothing stored."),
        )
        .response(
            "500",
            error("The endpoint is misconfigured and cannot check deliveries. Nothing stored; the provider retries."),
        )
        .response(
            "503",
            error("The store is unavailable (or the request took longer than 8 s): the delivery may not be stored; the provider retries."),
        )
    }

    /// `GET /healthz`.
    pub(crate) fn healthz() -> OperationBuilder {
        operation(
            "healthz",
            "service",
            "Liveness",
            "Answers while the process serves HTTP.",
        )
        .response(
            "200",
            text_response("Alive.", "text/plain; charset=utf-8", "ok"),
        )
    }

    /// `GET /readyz`.
    pub(crate) fn readyz() -> OperationBuilder {
        operation(
            "readyz",
            "service",
            "Readiness",
            "Answers `ready` when the store answers.",
        )
        .response(
            "200",
            text_response("Ready.", "text/plain; charset=utf-8", "ready"),
        )
        .response("503", error("The store does not answer."))
    }

    /// `GET /metrics`.
    pub(crate) fn metrics() -> OperationBuilder {
        operation(
            "metrics",
            "service",
            "Prometheus metrics",
            "The service's metrics in the Prometheus text format. Open by default; with \
             `[api] protect_metrics = true` (and tokens configured) it needs a `read` token.",
        )
        .response(
            "200",
            text_response(
                "The metrics.",
                crate::metrics::CONTENT_TYPE,
                "# TYPE shipfeed_deliveries_total counter\n",
            ),
        )
    }

    /// `GET /openapi.json`.
    pub(crate) fn openapi() -> OperationBuilder {
        operation(
            "openapi",
            "service",
            "This document",
            "The OpenAPI 3.1 document of the HTTP API (also committed as \
             `schema/openapi.json`). Needs no token.",
        )
        .response(
            "200",
            ResponseBuilder::new().description("The document.").content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Object).build()))
                    .build(),
            ),
        )
        .response("500", error("The document could not be generated."))
    }

    /// `GET /v1/events`.
    pub(crate) fn events() -> OperationBuilder {
        operation(
            "listFeed",
            "feed",
            "A page of the feed",
            "The feed's items after the cursor `after`, in cursor order: events (each \
             revision), retractions, shipment state changes, alerts, cleared alerts and \
             drift. Resume from `next_cursor`. Needs a `read` token.",
        )
        .parameter(cursor_param(
            "The cursor: items with a greater `seq` (0: from the beginning).",
        ))
        .parameter(limit_param())
        .parameters(Some(filter_params()))
        .response("200", json_response("A page of the feed.", "EventsPage"))
        .response(
            "400",
            error(
                "A filter value outside its set (the body names the parameter, the value and \
                 the values allowed), or a query parameter not of its type.",
            ),
        )
        .response("503", unavailable())
    }

    /// `GET /v1/events/{event_id}/revisions`.
    pub(crate) fn revisions() -> OperationBuilder {
        operation(
            "listRevisions",
            "feed",
            "An event's revisions",
            "Every stored version of an event, oldest first, with the delivery each came \
             from. Needs a `read` token.",
        )
        .parameter(path_param("event_id", "The event's `event_id`.", string()))
        .response("200", json_response("Its revisions.", "RevisionsAnswer"))
        .response("404", error("No such event."))
        .response("503", unavailable())
    }

    /// `GET /v1/shipments/{tracking}`.
    pub(crate) fn shipments_by_tracking() -> OperationBuilder {
        operation(
            "getShipments",
            "feed",
            "Shipments by tracking number",
            "Every shipment with this tracking number (of any carrier): its state and \
             timeline. Needs a `read` token.",
        )
        .parameter(path_param("tracking", "The tracking number.", string()))
        .response("200", json_response("The shipments.", "ShipmentsAnswer"))
        .response("404", error("No such shipment."))
        .response("503", unavailable())
    }

    /// `GET /v1/search`.
    pub(crate) fn search() -> OperationBuilder {
        operation(
            "searchShipments",
            "feed",
            "Shipments by tracking number or order number",
            "Every shipment whose tracking number (any carrier; case and spaces ignored) or \
             merchant's order number (case and surrounding spaces ignored) is `q`: its state, \
             timeline, and retracted events. Needs a `read` token.",
        )
        .parameter(
            query_param("q", "A tracking number or an order number.", string())
                .required(Required::True),
        )
        .response("200", json_response("The shipments.", "ShipmentsAnswer"))
        .response("400", error("No `q`."))
        .response("404", error("No such shipment."))
        .response("503", unavailable())
    }

    /// `GET /v1/status`.
    pub(crate) fn status() -> OperationBuilder {
        operation(
            "getStatus",
            "operations",
            "Where the pipeline is",
            "How far the projector is behind the inbox, from the store (every replica answers \
             the same). Needs a `read` token.",
        )
        .response(
            "200",
            json_response("The pipeline's position.", "StatusAnswer"),
        )
        .response("503", unavailable())
    }

    /// `GET /v1/shipments/{carrier}/{tracking}`.
    pub(crate) fn shipments_by_carrier() -> OperationBuilder {
        operation(
            "getShipmentsOfCarrier",
            "feed",
            "Shipments by carrier and tracking number",
            "The shipment of this carrier (normalized: `Mondial Relay` is `mondial_relay`) \
             and tracking number: its state and timeline. Needs a `read` token.",
        )
        .parameter(path_param("carrier", "The carrier.", string()))
        .parameter(path_param("tracking", "The tracking number.", string()))
        .response("200", json_response("The shipments.", "ShipmentsAnswer"))
        .response("404", error("No such shipment."))
        .response("503", unavailable())
    }

    /// `GET /v1/deliveries/{seq}`.
    pub(crate) fn delivery() -> OperationBuilder {
        operation(
            "getDelivery",
            "operations",
            "Where a delivery is",
            "A stored delivery: projected or not yet, and what its projection produced \
             (events, duplicates, revisions, retractions, notices, dead letter). Needs a \
             `read` token.",
        )
        .parameter(seq_param(
            "The delivery's inbox `seq` (the webhook's `delivery_seq`).",
        ))
        .response("200", json_response("The delivery.", "DeliveryStatus"))
        .response("400", bad_query())
        .response("404", error("No delivery with this sequence number."))
        .response("503", unavailable())
    }

    /// `GET /v1/dead-letters`.
    pub(crate) fn dead_letters() -> OperationBuilder {
        operation(
            "listDeadLetters",
            "operations",
            "Dead letters",
            "Authentic deliveries that could not be normalized, after the cursor, without \
             their bodies. Needs a `read` token.",
        )
        .parameter(cursor_param(
            "The cursor: dead letters of a greater `delivery_seq` (0: from the beginning).",
        ))
        .parameter(limit_param())
        .response(
            "200",
            json_response("A page of dead letters.", "DeadLettersPage"),
        )
        .response("400", bad_query())
        .response("503", unavailable())
    }

    /// `GET /v1/dead-letters/{seq}/body`.
    pub(crate) fn dead_letter_body() -> OperationBuilder {
        operation(
            "getDeadLetterBody",
            "operations",
            "A dead letter's raw body (admin)",
            "The body of a dead letter exactly as it arrived. **Admin scope**: it is the \
             provider's payload, with whatever personal data it carries. Its headers are \
             never served (they hold the provider's credentials).",
        )
        .parameter(seq_param("The dead letter's `delivery_seq`."))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The raw body (`X-Content-Type-Options: nosniff`).")
                .content("application/octet-stream", ContentBuilder::new().build()),
        )
        .response("400", bad_query())
        .response("404", error("No dead letter with this sequence number."))
        .response("503", unavailable())
    }

    /// `POST /v1/dead-letters/replay`.
    pub(crate) fn replay_dead_letters() -> OperationBuilder {
        operation(
            "replayDeliveries",
            "operations",
            "Replay deliveries by seq (admin)",
            "Projects the deliveries named (dead letters, after a fix; any stored delivery \
             may be named) again with this build's adapters, as `shipfeed replay` does: in \
             place of the running projector, which pauses meanwhile and goes on after. Says \
             of each `seq` what became of it: `recovered` (a dead letter that normalizes \
             now), `projected` (normalized before and still), `dead_letter` (still, or now, \
             with the reason in `error`), `skipped` (its endpoint or SQS source is no longer \
             configured), `pending` (the projector has not reached it yet: left to it) or \
             `not_found`. Running it again is safe. Recorded in the audit log. **Admin \
             scope**.",
        )
        .request_body(Some(
            utoipa::openapi::request_body::RequestBodyBuilder::new()
                .description(Some("The deliveries: 1 to 1000 `seq`s."))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(schema_ref("ReplayRequest")))
                        .example(Some(json!({"seqs": [12, 13]})))
                        .build(),
                )
                .required(Some(Required::True))
                .build(),
        ))
        .response(
            "200",
            json_response(
                "The replay's counts, and each delivery's outcome, by `seq`.",
                "ReplayReport",
            ),
        )
        .response(
            "400",
            error("The body is not `{\"seqs\": [...]}` JSON, or names no `seq` or more than 1000."),
        )
        .response(
            "409",
            error(
                "Another replay took the projector's lease over meanwhile: send the request again.",
            ),
        )
        .response("503", unavailable())
    }

    /// `GET /v1/audit`.
    pub(crate) fn audit() -> OperationBuilder {
        operation(
            "listAudit",
            "operations",
            "The audit log",
            "Operators' actions through the API and the command line (replay, redeliver, \
             pause, resume), newest first: when, who (the API token's name, `cli:<user>`, or \
             `anonymous` when the API is open), what, to what, whether it was done, and its \
             parameters and result counts (never a body, a token or a payload's text). Page \
             with `before` = the previous page's `next`. Needs a `read` token.",
        )
        .parameter(query_param(
            "before",
            "Only entries with a smaller `id` (the previous page's `next`); absent: from the \
             newest.",
            integer(KnownFormat::Int64),
        ))
        .parameter(limit_param())
        .response(
            "200",
            json_response("A page of the audit log.", "AuditPage"),
        )
        .response("400", error("A query parameter not of its type."))
        .response("503", unavailable())
    }

    /// `GET /v1/alerts`.
    pub(crate) fn alerts() -> OperationBuilder {
        operation(
            "listAlerts",
            "operations",
            "Open alerts",
            "Alerts raised and not yet cleared (stalled shipments), by `alert_id`. Needs a \
             `read` token.",
        )
        .parameter(query_param(
            "after",
            "The last `alert_id` of the previous page (its `next`); empty: from the first.",
            string().default(Some(json!(""))),
        ))
        .parameter(limit_param())
        .response("200", json_response("A page of open alerts.", "AlertsPage"))
        .response("400", bad_query())
        .response("503", unavailable())
    }

    /// `GET /v1/drift`.
    pub(crate) fn drift() -> OperationBuilder {
        operation(
            "getDrift",
            "operations",
            "Contract drift",
            "What the adapters met in authentic deliveries and do not know (status codes, \
             message types, fields, types), per provider, kind and key, and what the cap \
             dropped. Needs a `read` token.",
        )
        .parameter(query_param(
            "provider",
            "Only this provider's drift.",
            schema_ref("Provider"),
        ))
        .response("200", json_response("The drift report.", "DriftReport"))
        .response("400", error("An unknown provider."))
        .response("503", unavailable())
    }
    /// `GET /v1/subscriptions`.
    pub(crate) fn subscriptions() -> OperationBuilder {
        operation(
            "listSubscriptions",
            "subscriptions",
            "The subscriptions",
            "Every configured subscription (the `[[subscription]]` tables, then the `sink` \
             setting's): its kind, its saved cursor, and whether it sends (`active`, \
             `paused`, `disabled`, why and since when; a kind other than `http` is always \
             `active`). No target address, no secret. Needs a `read` token.",
        )
        .response(
            "200",
            json_response("The subscriptions.", "SubscriptionsAnswer"),
        )
        .response("503", unavailable())
    }

    /// `GET /v1/subscriptions/{name}/messages`.
    pub(crate) fn subscription_messages() -> OperationBuilder {
        operation(
            "listSubscriptionMessages",
            "subscriptions",
            "An HTTP push subscription's parked messages",
            "The feed items an HTTP push subscription has not delivered yet and keeps: \
             `pending` (waiting for their next attempt, or behind an earlier item of their \
             shipment) and `exhausted` (every attempt failed: kept until redelivered), by \
             `seq`, with their `webhook-id`, attempts and last error, without their bodies. \
             Needs a `read` token.",
        )
        .parameter(subscription_param())
        .parameter(query_param(
            "state",
            "Only the messages in this state: `pending` or `exhausted` (default: both).",
            string().enum_values(Some(["pending", "exhausted"])),
        ))
        .parameter(cursor_param(
            "The cursor: messages of a greater `seq` (0: from the first).",
        ))
        .parameter(limit_param())
        .response(
            "200",
            json_response("A page of parked messages.", "MessagesPage"),
        )
        .response(
            "400",
            error("An unknown `state`, or a query parameter not of its type."),
        )
        .response("404", unknown_subscription())
        .response("409", not_push())
        .response("503", unavailable())
    }

    /// `POST /v1/subscriptions/{name}/pause`.
    pub(crate) fn pause_subscription() -> OperationBuilder {
        operation(
            "pauseSubscription",
            "subscriptions",
            "Pause an HTTP push subscription (admin)",
            "Stops sending: the subscription's cursor and parked messages wait until it is \
             resumed. The replica driving it stops at its next round, at once on the \
             replica that answers (no restart). **Admin scope**.",
        )
        .parameter(subscription_param())
        .response(
            "200",
            json_response("Its state after the change.", "SubscriptionControl"),
        )
        .response("404", unknown_subscription())
        .response("409", not_push())
        .response("503", unavailable())
    }

    /// `POST /v1/subscriptions/{name}/resume`.
    pub(crate) fn resume_subscription() -> OperationBuilder {
        operation(
            "resumeSubscription",
            "subscriptions",
            "Resume or re-enable an HTTP push subscription (admin)",
            "Sends again after a pause, or after the subscription was disabled (failing \
             longer than `disable_after`, or its receiver answered 410); how long it failed \
             before no longer counts. Its exhausted messages stay exhausted (redeliver \
             them). **Admin scope**.",
        )
        .parameter(subscription_param())
        .response(
            "200",
            json_response("Its state after the change.", "SubscriptionControl"),
        )
        .response("404", unknown_subscription())
        .response("409", not_push())
        .response("503", unavailable())
    }

    /// `POST /v1/subscriptions/{name}/redeliver`.
    pub(crate) fn redeliver() -> OperationBuilder {
        operation(
            "redeliverSubscription",
            "subscriptions",
            "Redeliver an HTTP push subscription's exhausted messages (admin)",
            "Puts its exhausted messages (only those first parked at or after `since`, when \
             given) back on schedule, due now, each with a fresh set of attempts under the \
             same `webhook-id` (receivers deduplicate on it). They may arrive after later \
             items of their shipment, which were sent once these were exhausted. A paused \
             or disabled subscription sends them once resumed. **Admin scope**.",
        )
        .parameter(subscription_param())
        .parameter(query_param(
            "since",
            "RFC 3339 (`2024-06-01T00:00:00Z`; percent-encode a `+` offset as `%2B`): only \
             the messages first parked at or after it (default: all).",
            string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        ))
        .response(
            "200",
            json_response("How many messages are due again.", "RedeliverAnswer"),
        )
        .response("400", error("`since` is not an RFC 3339 time."))
        .response("404", unknown_subscription())
        .response("409", not_push())
        .response("503", unavailable())
    }
}
