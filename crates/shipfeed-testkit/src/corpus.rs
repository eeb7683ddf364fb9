//! Seeded, deterministic corpora of realistic deliveries, for the benchmarks (`cargo bench`
//! in the `shipfeed` crate, `cargo xtask bench ingest`) and anything else that needs many
//! plausible deliveries rather than one of each case.
//!
//! The bodies have the shapes of the fixture generators in `xtask/src/fixtures/` and of the
//! adapters' wire types, with realistic field sizes and a mix of statuses:
//!
//! | provider | body | history | authenticated by |
//! |---|---|---|---|
//! | Sendcloud | `parcel_status_changed`, v2 (`status.id`) or v3 (`status.code`) shape, written as Python's `json.dumps` writes it (`", "`, `": "`, `\uXXXX`) | one status per delivery | `Sendcloud-Signature`: hex HMAC-SHA256 |
//! | HappyColis | `{header, body}` `shipment/shipping_event`, compact | the whole history, 1..=15 events | `x-happycolis-webhook-signature`: base64 HMAC-SHA256 |
//! | Shipup | `webhook_event` `tracker.events.new`, compact, unix seconds | the whole tracker, 1..=15 events | `Authorization: Basic` (`shipup:<secret>`) |
//! | Seven Senders | SQS message body, compact, documented field order | status plus 0..=14 `events` (1..=15 in all) | nothing (the queue credentials) |
//!
//! Every delivery is signed with [`FIXTURE_SECRET`] (see
//! [`credentials`]). Delivery `index` of a corpus carries ids derived from `index`, so that
//! different indices never share a delivery id, shipment or event id: a service ingesting a
//! corpus stores every delivery and every event once. The same `(seed, index)` always gives
//! the same bytes.
//!
//! ```
//! use shipfeed_core::Provider;
//! use shipfeed_testkit::corpus;
//!
//! let deliveries = corpus::generate(Provider::HappyColis, 7, 0..3);
//! assert_eq!(deliveries.len(), 3);
//! assert_eq!(deliveries, corpus::generate(Provider::HappyColis, 7, 0..3));
//! assert!(deliveries.iter().all(|d| (1..=15).contains(&d.history)));
//! ```

use std::ops::Range;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use shipfeed_core::{auth, Credentials, Headers, Provider, RawDelivery, Secret};

use crate::FIXTURE_SECRET;

/// The user name of the Shipup endpoint's Basic credentials.
pub const SHIPUP_USER: &str = "shipup";

/// The most events one generated history holds.
pub const MAX_HISTORY: usize = 15;

/// The providers that post webhooks (Seven Senders is pulled from a queue instead).
pub const WEBHOOK_PROVIDERS: [Provider; 3] =
    [Provider::Sendcloud, Provider::HappyColis, Provider::Shipup];

/// One generated delivery: the exact body, the headers sent with it, and how many tracking
/// events its body describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Who sent it.
    pub provider: Provider,
    /// The exact body bytes (the signature covers these).
    pub body: Vec<u8>,
    /// Headers, the authentication header first.
    pub headers: Vec<(String, String)>,
    /// Events in the body's history (1 for Sendcloud, which sends one status per delivery).
    pub history: usize,
}

impl Delivery {
    /// The delivery as an adapter takes it, received at the test kit's fixed
    /// [`received_at`](crate::received_at).
    pub fn raw(&self) -> RawDelivery {
        RawDelivery {
            body: self.body.clone(),
            headers: self.headers.iter().cloned().collect::<Headers>(),
            received_at: crate::received_at(),
        }
    }
}

/// The credentials that accept every delivery of `provider` this module generates:
/// [`FIXTURE_SECRET`] as HMAC key (Sendcloud, HappyColis), as the Basic
/// password of [`SHIPUP_USER`] (Shipup), and none for Seven Senders.
pub fn credentials(provider: Provider) -> Credentials {
    match provider {
        Provider::Shipup => Credentials::Basic {
            username: SHIPUP_USER.to_owned(),
            password: Secret::new(FIXTURE_SECRET),
        },
        Provider::SevenSenders => Credentials::None,
        _ => Credentials::Hmac(Secret::new(FIXTURE_SECRET)),
    }
}

/// Deliveries `indices` of `provider`'s corpus for `seed`.
///
/// # Panics
/// As [`delivery`].
pub fn generate(provider: Provider, seed: u64, indices: Range<u64>) -> Vec<Delivery> {
    indices
        .map(|index| delivery(provider, seed, index))
        .collect()
}

/// Deliveries `indices` cycling through `providers` (delivery `i` is from
/// `providers[i % providers.len()]`); empty when `providers` is.
///
/// # Panics
/// As [`delivery`].
pub fn mixed(providers: &[Provider], seed: u64, indices: Range<u64>) -> Vec<Delivery> {
    if providers.is_empty() {
        return Vec::new();
    }
    indices
        .map(|index| {
            let provider = providers[(index % providers.len() as u64) as usize];
            delivery(provider, seed, index)
        })
        .collect()
}

/// Delivery `index` of `provider`'s corpus for `seed`.
///
/// # Panics
/// For a provider this module has no generator for yet (a test setup error).
pub fn delivery(provider: Provider, seed: u64, index: u64) -> Delivery {
    let mut rng = Rng::new(seed, index, provider);
    match provider {
        Provider::Sendcloud => sendcloud(&mut rng, index),
        Provider::HappyColis => happycolis(&mut rng, index),
        Provider::Shipup => shipup(&mut rng, index),
        Provider::SevenSenders => sevensenders(&mut rng, index),
        other => panic!("no corpus generator for provider `{other}`: add one to corpus.rs"),
    }
}

/// SplitMix64, seeded per `(seed, index, provider)`: deterministic and cheap.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: u64, provider: Provider) -> Self {
        let tag = provider
            .as_str()
            .bytes()
            .fold(0_u64, |h, b| h.wrapping_mul(0x100_0000_01b3) ^ u64::from(b));
        Rng(mix(seed ^ mix(index ^ mix(tag))))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `range` (inclusive).
    fn between(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1).max(1) as u64) as i64
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A version-4-shaped UUID.
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            8 | ((b >> 62) & 3),
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
/// 2024-03-01T00:00:00Z: every story starts within the following 60 days and ends before the
/// test kit's fixed `received_at` (2024-06-01).
const BASE: i64 = 1_709_251_200;

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap_or_default()
}

/// `2024-04-02T07:00:00.000Z`, as JavaScript's `Date.toISOString` writes it.
fn iso_millis(unix: i64) -> String {
    at(unix).format("%Y-%m-%dT%H:%M:%S.000Z").to_string()
}

fn signed_headers(name: &str, signature: String) -> Vec<(String, String)> {
    vec![
        (name.to_owned(), signature),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Sendcloud

/// `(id, v3 code, message)`; the common statuses appear more than once, as they do in traffic.
const SENDCLOUD_STATUSES: &[(u32, &str, &str)] = &[
    (1, "ANNOUNCED", "Announced"),
    (3, "TO_SORTING", "En route to sorting center"),
    (3, "TO_SORTING", "En route to sorting center"),
    (4, "DELAYED", "Delivery delayed"),
    (5, "SORTED", "Sorted"),
    (7, "SORTING", "Being sorted"),
    (8, "DELIVERY_FAILED", "Delivery attempt failed"),
    (11, "DELIVERED", "Delivered"),
    (11, "DELIVERED", "Delivered"),
    (12, "AWAITING_CUSTOMER_PICKUP", "Awaiting customer pickup"),
    (22, "PICKED_UP_BY_DRIVER", "Shipment picked up by driver"),
    (80, "UNDELIVERABLE", "Unable to deliver"),
    (91, "SHIPMENT_ON_ROUTE", "Parcel en route"),
    (91, "SHIPMENT_ON_ROUTE", "Parcel en route"),
    (92, "DRIVER_ON_ROUTE", "Driver en route"),
    (
        93,
        "COLLECTED_BY_CUSTOMER",
        "Shipment collected by customer",
    ),
    (1000, "READY_TO_SEND", "Ready to send"),
    (2000, "CANCELLED", "Cancelled"),
    (62989, "AT_CUSTOMS", "At Customs"),
    (62990, "AT_SORTING_CENTRE", "At sorting centre"),
    (62992, "RETURNED_TO_SENDER", "Returned to sender"),
    (62996, "EXCEPTION", "Exception"),
];

/// `(code, shipping method, tracking prefix, destination country)`.
const SENDCLOUD_CARRIERS: &[(&str, &str, &str, &str)] = &[
    ("postnl", "PostNL Standard 0-23kg", "3SYZXG", "NL"),
    ("dhl_de", "DHL Paket 0-31.5kg", "00340434", "DE"),
    ("dpd", "DPD Classic", "0150", "DE"),
    ("colissimo", "Colissimo Home", "6A", "FR"),
    ("chronopost", "Chronopost Shop2Shop", "XW", "FR"),
    ("bpost", "bpost International", "32300", "BE"),
    ("ups", "UPS Standard", "1Z999AA1", "DE"),
    ("mondial_relay", "Mondial Relay Point Relais", "MR", "FR"),
];

/// `(name, street, house number, postal code, city, email)`.
const PEOPLE: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "Jürgen Müller",
        "Hauptstraße",
        "12",
        "50667",
        "Köln",
        "jurgen@example.com",
    ),
    (
        "Anna de Vries",
        "Prinsengracht",
        "263",
        "1016 GV",
        "Amsterdam",
        "anna.devries@example.nl",
    ),
    (
        "Émilie Rousseau",
        "Rue de Rivoli",
        "48",
        "75004",
        "Paris",
        "emilie.rousseau@example.fr",
    ),
    (
        "Lukas Schneider",
        "Friedrichstraße",
        "101",
        "10117",
        "Berlin",
        "l.schneider@example.de",
    ),
    (
        "Sofia Rossi",
        "Via Roma",
        "7",
        "20121",
        "Milano",
        "sofia.rossi@example.it",
    ),
    (
        "Thomas Peeters",
        "Meir",
        "85",
        "2000",
        "Antwerpen",
        "thomas.peeters@example.be",
    ),
];

fn sendcloud(rng: &mut Rng, index: u64) -> Delivery {
    let &(status_id, code, message) = rng.pick(SENDCLOUD_STATUSES);
    let &(carrier, method, prefix, country) = rng.pick(SENDCLOUD_CARRIERS);
    let &(name, street, number, postcode, city, email) = rng.pick(PEOPLE);
    let id = 200_000_000 + index;
    let tracking = format!("{prefix}{:010}", mix(id) % 10_000_000_000);
    let created = BASE + rng.between(0, 60 * DAY);
    let updated = created + rng.between(2 * HOUR, 6 * DAY);
    let ts_ms = updated * 1000 + rng.between(0, 999);
    let fmt = |unix: i64| at(unix).format("%d-%m-%Y %H:%M:%S").to_string();
    let v3 = rng.below(2) == 0;
    let status = if v3 {
        json!({"code": code, "message": message})
    } else {
        json!({"id": status_id, "message": message})
    };
    let parcel = json!({
        "id": id,
        "name": name,
        "company_name": if rng.below(4) == 0 { "Beispiel GmbH" } else { "" },
        "address": format!("{street} {number}"),
        "address_divided": {"street": street, "house_number": number},
        "address_2": "",
        "city": city,
        "postal_code": postcode,
        "telephone": format!("+49221{:07}", rng.below(10_000_000)),
        "email": email,
        "date_created": fmt(created),
        "date_updated": fmt(updated),
        "date_announced": fmt(created + 18),
        "tracking_number": tracking,
        "tracking_url": format!("https://tracking.sendcloud.sc/forward?carrier={carrier}&code={tracking}&destination={country}&lang=en&source=NL&type=parcel&verification={}", postcode.replace(' ', "")),
        "weight": format!("{}.{:03}", rng.between(0, 12), rng.below(1000)),
        "status": status,
        "carrier": {"code": carrier, "name": method.split(' ').next().unwrap_or(carrier), "servicepoints_carrier_code": carrier},
        "shipment": {"id": 1000 + rng.below(400), "name": method},
        "country": {"iso_2": country, "iso_3": "", "name": country},
        "order_number": format!("ORD-{}", 100_000 + index),
        "shipment_uuid": rng.uuid(),
        "external_order_id": format!("{}", 900_000 + index),
        "external_shipment_id": format!("{}", 910_000 + index),
        "colli_uuid": rng.uuid(),
        "collo_nr": 0,
        "collo_count": 1,
        "is_return": rng.below(20) == 0,
        "to_service_point": if carrier == "mondial_relay" { json!(10_000_000 + rng.below(1_000_000)) } else { Value::Null },
        "label": {"normal_printer": [format!("https://panel.sendcloud.sc/api/v2/labels/normal_printer/{id}?start_from=0")], "label_printer": format!("https://panel.sendcloud.sc/api/v2/labels/label_printer/{id}")},
        "customs_declaration": {},
        "data": {},
        "source": "api_v2:bucket",
    });
    let body = python_json(&json!({
        "action": "parcel_status_changed",
        "timestamp": ts_ms,
        "carrier_status_change_timestamp": if rng.below(3) == 0 { Value::Null } else { json!(ts_ms - rng.between(10, 5_000)) },
        "parcel": parcel,
    }));
    let signature = auth::sign_hex(&Secret::new(FIXTURE_SECRET), &body);
    Delivery {
        provider: Provider::Sendcloud,
        body,
        headers: signed_headers("Sendcloud-Signature", signature),
        history: 1,
    }
}

/// JSON text as Python's `json.dumps(value)` writes it with default arguments: `", "` and
/// `": "` separators, non-ASCII escaped as `\uXXXX` (surrogate pairs beyond the BMP). Sendcloud
/// signs bodies in this form.
pub fn python_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048);
    write_python(value, &mut out);
    out
}

fn write_python(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => {
            out.extend_from_slice(value.to_string().as_bytes());
        }
        Value::String(text) => write_python_str(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_python(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_python_object(map, out),
    }
}

fn write_python_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        write_python_str(key, out);
        out.extend_from_slice(b": ");
        write_python(item, out);
    }
    out.push(b'}');
}

fn write_python_str(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c as u8),
            c => {
                let mut units = [0_u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

// ---------------------------------------------------------------------------------------------
// HappyColis

/// `(name, tracking prefix, tracking URL)`.
const HC_METHODS: &[(&str, &str, &str)] = &[
    (
        "Colissimo Domicile",
        "6A",
        "https://www.laposte.fr/outils/suivre-vos-envois?code=",
    ),
    (
        "Chronopost Chrono 13",
        "XY",
        "https://www.chronopost.fr/tracking-no-cms/suivi-page?listeNumerosLT=",
    ),
    (
        "Mondial Relay Point Relais",
        "",
        "https://www.mondialrelay.fr/suivi-de-colis/?NumeroExpedition=",
    ),
    ("DPD Predict", "", "https://trace.dpd.fr/fr/trace/"),
    ("UPS Standard", "1Z", "https://www.ups.com/track?tracknum="),
    (
        "GLS Business Parcel",
        "",
        "https://gls-group.com/FR/fr/suivi-colis?match=",
    ),
    (
        "Livraison express 24h",
        "LX",
        "https://suivi.example.com/colis/",
    ),
];

const HC_HUBS: &[&str] = &[
    "Rungis",
    "Lyon Saint-Priest",
    "Bordeaux Mérignac",
    "Lille Lesquin",
    "Marseille Vitrolles",
    "Nantes Carquefou",
    "Strasbourg Entzheim",
];

const HC_PRODUCTS: &[&str] = &[
    "T-Shirt Blanc Taille M",
    "Sweat Capuche Marine Taille L",
    "Casquette Brodée Noire",
    "Chaussettes Rayées Lot de 3",
    "Tote Bag Coton Bio",
];

/// Endings of a HappyColis journey after the transit scans.
const HC_TAILS: &[&[&str]] = &[
    &[],
    &[],
    &["OUT_FOR_DELIVERY"],
    &["OUT_FOR_DELIVERY", "DELIVERED"],
    &["OUT_FOR_DELIVERY", "DELIVERED"],
    &["OUT_FOR_DELIVERY", "DELIVERED"],
    &["EXCEPTION"],
    &["OUT_FOR_DELIVERY", "ATTEMPT_FAIL"],
    &["OUT_FOR_DELIVERY", "ATTEMPT_FAIL", "AVAILABLE_FOR_PICKUP"],
    &[
        "OUT_FOR_DELIVERY",
        "ATTEMPT_FAIL",
        "OUT_FOR_DELIVERY",
        "DELIVERED",
    ],
    &[
        "OUT_FOR_DELIVERY",
        "ATTEMPT_FAIL",
        "AVAILABLE_FOR_PICKUP",
        "RETURNED_TO_SENDER",
    ],
    &["PENDING", "EXPIRED"],
    &["CUSTOMS_HOLD"],
];

/// `NEW`, `INFO_RECEIVED`, transit scans, then a tail: exactly `len` steps.
fn journey(len: usize, tail: &[&'static str]) -> Vec<&'static str> {
    let tail = &tail[..tail.len().min(len)];
    let mut steps: Vec<&'static str> = vec!["NEW", "INFO_RECEIVED"];
    steps.truncate(len - tail.len());
    while steps.len() + tail.len() < len {
        steps.push("IN_TRANSIT");
    }
    steps.extend_from_slice(tail);
    steps
}

fn hc_words(step: &str, hub: &str) -> Option<(&'static str, &'static str, String)> {
    Some(match step {
        "INFO_RECEIVED" => (
            "A100",
            "Shipment information received",
            "Electronic shipment data received from the sender".to_owned(),
        ),
        "PENDING" => (
            "P120",
            "Awaiting pickup",
            "Parcel ready at the warehouse, awaiting carrier pickup".to_owned(),
        ),
        "IN_TRANSIT" => (
            "D101",
            "Parcel in transit at sorting center",
            format!("Parcel scanned at {hub} sorting center"),
        ),
        "OUT_FOR_DELIVERY" => (
            "L200",
            "Parcel out for delivery",
            "Parcel loaded on the delivery round".to_owned(),
        ),
        "ATTEMPT_FAIL" => (
            "L210",
            "Delivery attempt failed",
            "Recipient absent, delivery notice left in the mailbox".to_owned(),
        ),
        "AVAILABLE_FOR_PICKUP" => (
            "L220",
            "Parcel available for pickup",
            "Parcel available at the pickup point for 10 days".to_owned(),
        ),
        "DELIVERED" => (
            "L300",
            "Parcel delivered",
            "Delivered to the recipient".to_owned(),
        ),
        "EXCEPTION" => (
            "X400",
            "Delivery delayed",
            format!("Sorting incident at {hub}, parcel delayed by one day"),
        ),
        "RETURNED_TO_SENDER" => (
            "R500",
            "Parcel returning to sender",
            "Pickup period expired, parcel on its way back to the sender".to_owned(),
        ),
        "CUSTOMS_HOLD" => (
            "C300",
            "Parcel held at customs",
            "Awaiting payment of import duties".to_owned(),
        ),
        _ => return None,
    })
}

fn happycolis(rng: &mut Rng, index: u64) -> Delivery {
    let len = rng.between(1, MAX_HISTORY as i64) as usize;
    let tail = rng.pick(HC_TAILS);
    let steps = journey(len, tail);
    let &(method, prefix, url) = rng.pick(HC_METHODS);
    let &(fullname, street, number, zipcode, city, email) = rng.pick(PEOPLE);
    let shipment_id = rng.uuid();
    let organization = "5f0c8a2e-91d4-4b7a-a3c6-2e8d1f4b9a70";
    let tracking = format!("{prefix}{:011}", (mix(index) % 100_000_000_000));
    let start = BASE + rng.between(0, 60 * DAY);
    let mut now = start;
    let mut events = Vec::with_capacity(steps.len());
    let mut delivered = Value::Null;
    let mut first_attempt = Value::Null;
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            now += rng.between(2 * HOUR, 20 * HOUR);
        }
        let hub = *rng.pick(HC_HUBS);
        let words = hc_words(step, hub);
        let recorded = if words.is_some() {
            now + rng.between(MINUTE, 9 * MINUTE)
        } else {
            now
        };
        if *step == "DELIVERED" {
            delivered = json!(iso_millis(now));
        }
        if *step == "ATTEMPT_FAIL" && first_attempt.is_null() {
            first_attempt = json!(iso_millis(now));
        }
        events.push(json!({
            "id": format!("{}-{:04x}-{:012x}", &shipment_id[..18], i, index),
            "shipmentId": shipment_id,
            "event": step,
            "eventCode": words.as_ref().map(|w| w.0),
            "eventMessage": words.as_ref().map(|w| w.1),
            "eventDescription": words.as_ref().map(|w| w.2.clone()),
            "eventCountry": words.as_ref().map(|_| "FR"),
            "eventDate": words.as_ref().map(|_| iso_millis(now)),
            "date": iso_millis(recorded),
            "comment": (*step == "EXPIRED").then_some("Label not used within 30 days"),
            "meta": null,
        }));
    }
    let newest = events
        .iter()
        .filter_map(|e| e["date"].as_str())
        .max()
        .map(str::to_owned)
        .unwrap_or_else(|| iso_millis(start));
    let terminal = matches!(
        steps.last().copied(),
        Some("DELIVERED" | "DELIVERED_TO_SENDER" | "EXPIRED")
    );
    let body = json!({
        "id": shipment_id,
        "externalId": format!("EXT-{}", 9_000_000 + index),
        "locationId": "e9a3c5d7-2b41-4f6e-8a0c-3d5b7e9f1a24",
        "organizationId": organization,
        "shippingMethodId": rng.uuid(),
        "shippingMethodName": method,
        "lastEvent": steps.last(),
        "state": if terminal { "COMPLETED" } else { "OPENED" },
        "label": tracking,
        "reference": format!("SHP-2024-{:07}", index),
        "trackingUrl": format!("{url}{tracking}"),
        "tracking": tracking,
        "meta": null,
        "issuedAt": iso_millis(start),
        "createdAt": iso_millis(start),
        "deliveredAt": delivered,
        "firstAttemptedAt": first_attempt,
        "estimatedAt": if terminal { Value::Null } else { json!(iso_millis(now + 2 * DAY)) },
        "weight": 0.3 + rng.below(20) as f64 * 0.1,
        "weightSellingUnit": "kg",
        "volume": null,
        "volumeSellingUnit": "l",
        "format": rng.pick(&["S", "M", "L"]),
        "addresses": [{
            "id": rng.uuid(), "shipmentId": shipment_id, "type": "DELIVERY",
            "fullname": fullname, "email": email, "address": format!("{number} {street}"),
            "addressComplement": null, "zipcode": zipcode, "city": city, "country": "FR",
            "state": null, "phone": format!("+336{:08}", rng.below(100_000_000)),
            "mobile": null, "comments": null,
        }],
        "details": [{
            "id": rng.uuid(), "shipmentId": shipment_id, "orderLineId": rng.uuid(),
            "deliveryOrderLineId": rng.uuid(), "label": rng.pick(HC_PRODUCTS),
            "quantity": 1 + rng.below(3), "batchNumber": null, "limitUsageDate": null,
        }],
        "events": events,
    });
    let header = json!({
        "organizationId": organization,
        "messageId": rng.uuid(),
        "webhookId": "c41e7b90-3a25-4f8e-9d61-7b0a2c5e8f13",
        "type": "shipment/shipping_event",
        "date": newest,
    });
    let body = serde_json::to_vec(&json!({"header": header, "body": body})).unwrap_or_default();
    let signature = auth::sign_base64(&Secret::new(FIXTURE_SECRET), &body);
    Delivery {
        provider: Provider::HappyColis,
        body,
        headers: signed_headers("x-happycolis-webhook-signature", signature),
        history: len,
    }
}

// ---------------------------------------------------------------------------------------------
// Shipup

/// `(code, name, service code, service name, tracking URL prefix)`.
const SHIPUP_CARRIERS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "colissimo",
        "Colissimo",
        "home",
        "Domicile sans signature",
        "https://www.laposte.fr/outils/suivre-vos-envois?code=",
    ),
    (
        "chronopost",
        "Chronopost",
        "chrono13",
        "Chrono 13",
        "https://www.chronopost.fr/tracking-no-cms/suivi-page?listeNumerosLT=",
    ),
    (
        "mondial_relay",
        "Mondial Relay",
        "24R",
        "Point Relais",
        "https://www.mondialrelay.fr/suivi-de-colis/?NumeroExpedition=",
    ),
    (
        "dhl_express",
        "DHL Express",
        "express_worldwide",
        "Express Worldwide",
        "https://www.dhl.com/fr-fr/home/tracking.html?tracking-id=",
    ),
    (
        "ups",
        "UPS",
        "standard",
        "UPS Standard",
        "https://www.ups.com/track?tracknum=",
    ),
    (
        "dpd_fr",
        "DPD France",
        "predict",
        "Predict",
        "https://trace.dpd.fr/fr/trace/",
    ),
];

const FR_CITIES: &[(&str, &str)] = &[
    ("Paris", "75010"),
    ("Lyon", "69007"),
    ("Marseille", "13002"),
    ("Lille", "59000"),
    ("Bordeaux", "33000"),
    ("Nantes", "44000"),
    ("Toulouse", "31000"),
    ("Strasbourg", "67000"),
];

/// Endings of a Shipup history after the transit scans, with the tracker status they leave.
const SHIPUP_TAILS: &[(&[&str], &str)] = &[
    (&[], "in_transit"),
    (&["out_for_delivery"], "in_transit"),
    (&["out_for_delivery", "delivered"], "delivered"),
    (&["out_for_delivery", "delivered"], "delivered"),
    (&["incident"], "exception"),
    (&["out_for_delivery", "failed_attempt"], "failed_attempt"),
    (&["pickup_point"], "pickup"),
    (
        &[
            "out_for_delivery",
            "failed_attempt",
            "pickup_point",
            "return",
        ],
        "return",
    ),
    (&["expired"], "expired"),
];

fn shipup_message(code: &str) -> &'static str {
    match code {
        "label_created" => "Shipping label created, the carrier is awaiting the parcel",
        "origin_scan" => "Parcel picked up by the carrier",
        "transit" => "Parcel in transit to the delivery site",
        "incident" => "Incident: the parcel is damaged, the carrier is investigating",
        "out_for_delivery" => "Parcel out for delivery",
        "failed_attempt" => "Recipient absent, a delivery notice has been left",
        "pickup_point" => "Parcel available at your pickup point",
        "delivered" => "Parcel delivered",
        "return" => "Parcel being returned to the sender",
        "expired" => "Tracking has expired without delivery",
        _ => "Tracking update",
    }
}

fn shipup(rng: &mut Rng, index: u64) -> Delivery {
    let len = rng.between(1, MAX_HISTORY as i64) as usize;
    let &(tail, tail_status) = rng.pick(SHIPUP_TAILS);
    let tail = &tail[..tail.len().min(len)];
    let mut codes: Vec<&str> = vec!["label_created", "origin_scan"];
    codes.truncate(len - tail.len());
    while codes.len() + tail.len() < len {
        codes.push("transit");
    }
    codes.extend_from_slice(tail);
    let status = if tail.is_empty() {
        if len == 1 {
            "info_received"
        } else {
            "in_transit"
        }
    } else {
        tail_status
    };
    let &(code, name, service, service_name, url) = rng.pick(SHIPUP_CARRIERS);
    let number = format!("6A{:011}", mix(index ^ 0x5350) % 100_000_000_000);
    let tracker_id = 5_000_000 + index;
    let created = BASE + rng.between(0, 60 * DAY);
    let mut time = created;
    let mut first = std::collections::HashMap::new();
    let events: Vec<Value> = codes
        .iter()
        .enumerate()
        .map(|(p, c)| {
            time += rng.between(3 * HOUR, 30 * HOUR);
            first.entry(*c).or_insert(time);
            let (city, zip) = *rng.pick(FR_CITIES);
            let known = p % 3 != 0;
            let text = shipup_message(c);
            json!({
                "id": 900_000_000 + index * 100 + p as u64,
                "object": "event",
                "happened_at": time,
                "event_type_code": c,
                "message": text,
                "raw": format!("{{\"code\":\"{c}\",\"label\":\"{text}\"}}"),
                "created_at": time + 11 * MINUTE,
                "updated_at": time + 11 * MINUTE,
                "standard_event": {"name": c, "slug": c},
                "address": {"id": 400_000 + index * 20 + p as u64, "object": "address",
                    "comment": null, "city": known.then_some(city), "country": "France",
                    "country_code": "FR", "state": null, "address1": null, "address2": null,
                    "zip": known.then_some(zip), "company_title": null, "first_name": null,
                    "last_name": null, "name": null},
            })
        })
        .collect();
    let (city, zip) = *rng.pick(FR_CITIES);
    let expected = created + 3 * DAY;
    let sent = time + 17 * MINUTE;
    let tracker = json!({
        "id": tracker_id,
        "object": "tracker",
        "carrier": {"name": name, "code": code},
        "carrier_service": {"code": service, "name": service_name},
        "carrier_code": code,
        "carrier_tracking_url": format!("{url}{number}"),
        "created_at": created,
        "custom_variables": {},
        "delivered_at": first.get("delivered"),
        "delivery_status_code": status,
        "shipped_at": first.get("origin_scan"),
        "first_delivery_attempted_at": first.get("failed_attempt"),
        "displayable_expected_delivery_date": at(expected).format("%Y-%m-%d").to_string(),
        "displayable_expected_delivery_datetime": null,
        "displayable_expected_delivery_kind": "carrier",
        "tracking_number": number,
        "uuid": rng.uuid(),
        "fulfillment": {
            "id": 700_000 + index,
            "object": "fulfillment",
            "merchant_id": format!("ful_{:08}", index),
            "fulfillment_number": format!("FR-{}-1", 200_000 + index),
            "custom_variables": {},
            "order": {
                "id": 600_000 + index, "object": "order",
                "order_number": format!("FR-{}", 200_000 + index),
                "merchant_id": format!("ord_{:08}", index),
                "email": format!("customer{index}@example.com"), "phone": null,
                "uuid": rng.uuid(), "ordered_at": created - 5 * HOUR, "custom_variables": {},
            },
            "shipping_address": {
                "id": 500_000 + index, "object": "address", "comment": null, "city": city,
                "country": "France", "country_code": "FR", "state": null,
                "address1": format!("{} rue de la République", 1 + rng.below(120)),
                "address2": null, "zip": zip, "company_title": null, "first_name": "Camille",
                "last_name": "Martin", "name": "Camille Martin",
            },
        },
        "events": events,
    });
    let new_event = 900_000_000 + index * 100 + (len as u64 - 1);
    let body = serde_json::to_vec(&json!({
        "id": 8_000_000 + index,
        "object": "webhook_event",
        "type": "tracker.events.new",
        "livemode": true,
        "retry_count": 0,
        "created_at": sent,
        "webhook_setting_id": 335_777,
        "data": {"object": tracker, "reason": {"kind": "new", "event_id": new_event}},
    }))
    .unwrap_or_default();
    let basic = format!(
        "Basic {}",
        BASE64.encode(format!("{SHIPUP_USER}:{FIXTURE_SECRET}"))
    );
    Delivery {
        provider: Provider::Shipup,
        body,
        headers: vec![
            ("Authorization".to_owned(), basic),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ],
        history: len,
    }
}

// ---------------------------------------------------------------------------------------------
// Seven Senders

/// `(carrier, carrier country)`.
const SS_CARRIERS: &[(&str, &str)] = &[
    ("dhl", "de"),
    ("dpd", "de"),
    ("hermes", "de"),
    ("gls", "nl"),
    ("postnl", "nl"),
    ("bpost", "be"),
    ("brt", "it"),
    ("postnord", "dk"),
    ("postat", "at"),
    ("colissimo", "fr"),
    ("ups", "fr"),
];

const SS_STATUSES: &[&str] = &[
    "New",
    "Info",
    "Pickup",
    "First Scan at LMC",
    "Hub Scan at LMC",
    "In transit",
    "In transit",
    "Out for Delivery",
    "Delivery attempt failed",
    "Delivered to pickup point",
    "Delivered",
    "Delivered",
    "Postal return",
    "",
];

const SS_EVENTS: &[&str] = &[
    "Delayed",
    "Light damage",
    "Contact carrier",
    "7S hub scan",
    "Carrier changed",
    "Carded",
];

fn sevensenders(rng: &mut Rng, index: u64) -> Delivery {
    let &(carrier, country) = rng.pick(SS_CARRIERS);
    let extra = rng.below(MAX_HISTORY as u64) as usize; // 0..=14 events besides the status
                                                        // A blank status (an update without a status change) comes with at least one event.
    let status = match *rng.pick(SS_STATUSES) {
        "" if extra == 0 => "In transit",
        status => status,
    };
    let start = BASE + rng.between(0, 60 * DAY);
    let mut time = start;
    let fmt = |unix: i64| at(unix).format("%d.%m.%Y %H:%M:%S").to_string();
    let events: Vec<Value> = (0..extra)
        .map(|_| {
            time += rng.between(HOUR, 20 * HOUR);
            json!({"name": rng.pick(SS_EVENTS), "creation_time": fmt(time)})
        })
        .collect();
    time += rng.between(HOUR, 10 * HOUR);
    let fields: [(&str, Value); 9] = [
        ("id", json!(format!("s{}", 300_000_000 + index))),
        ("order_id", json!(format!("SF-{:08}", index))),
        (
            "tracking_code",
            json!(format!(
                "3SSF{:012}",
                mix(index ^ 0x5353) % 1_000_000_000_000
            )),
        ),
        ("carrier", json!(carrier)),
        ("carrier_country", json!(country)),
        ("status", json!(status)),
        ("status_time", json!(fmt(time))),
        ("tickets", json!([])),
        ("events", Value::Array(events)),
    ];
    let inner: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}:{}", json!(key), value))
        .collect();
    let body = format!("{{{}}}", inner.join(",")).into_bytes();
    let history = extra + usize::from(!status.is_empty());
    Delivery {
        provider: Provider::SevenSenders,
        body,
        headers: vec![(
            "MessageId".to_owned(),
            format!("{:08x}-7s00-4000-8000-{:012x}", mix(index) >> 32, index),
        )],
        history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_matches_json_dumps() {
        let value = json!({"key": "value"});
        assert_eq!(python_json(&value), br#"{"key": "value"}"#);
        let value = json!({"a": [1, "M\u{fc}ller \u{1f4e6}"], "b": null, "c": "q\"\\\n"});
        assert_eq!(
            String::from_utf8(python_json(&value)).unwrap_or_default(),
            r#"{"a": [1, "M\u00fcller \ud83d\udce6"], "b": null, "c": "q\"\\\n"}"#
        );
    }

    #[test]
    fn corpora_are_deterministic_valid_json_with_unique_ids_and_histories_in_range() {
        for provider in Provider::ALL {
            let a = generate(provider, 1, 0..200);
            assert_eq!(a, generate(provider, 1, 0..200), "{provider}");
            assert_ne!(a, generate(provider, 2, 0..200), "{provider}");
            let mut bodies = std::collections::HashSet::new();
            for d in &a {
                assert!(
                    serde_json::from_slice::<Value>(&d.body).is_ok(),
                    "{provider}"
                );
                assert!((1..=MAX_HISTORY).contains(&d.history), "{provider}");
                assert!(bodies.insert(d.body.clone()), "{provider}: duplicate body");
            }
            let lengths: std::collections::BTreeSet<_> = a.iter().map(|d| d.history).collect();
            if provider != Provider::Sendcloud {
                assert!(lengths.len() >= 10, "{provider}: {lengths:?}");
            }
        }
    }

    #[test]
    fn mixed_cycles_through_the_providers() {
        let deliveries = mixed(&WEBHOOK_PROVIDERS, 3, 0..6);
        let providers: Vec<_> = deliveries.iter().map(|d| d.provider).collect();
        assert_eq!(providers[..3], WEBHOOK_PROVIDERS);
        assert_eq!(providers[3..], WEBHOOK_PROVIDERS);
        assert!(mixed(&[], 3, 0..6).is_empty());
    }

    #[test]
    fn journeys_have_the_asked_length() {
        for len in 1..=MAX_HISTORY {
            for tail in HC_TAILS {
                assert_eq!(journey(len, tail).len(), len);
            }
        }
    }
}
