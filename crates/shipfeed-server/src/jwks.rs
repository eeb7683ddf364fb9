//! The key sets of JWT endpoints, kept fresh in the background. Verification itself is pure
//! (`shipfeed::auth::jwt`) and reads only what [`EndpointKeys`] holds; this is where keys are
//! fetched.
//!
//! One task per JWT endpoint ([`EndpointKeys::refresh`]) fetches the JWKS (a URL, or a file
//! read again) when its [`Schedule`] says so:
//!
//! - at start (a file is also read once before the service starts, so a bad file stops it);
//! - every `refresh_seconds` after the last success;
//! - after a failure, from `min_refresh_seconds` on, doubling up to `refresh_seconds`, while
//!   the keys in use stay in use;
//! - when a token names a key id the set lacks (a rotation): at once, but never sooner than
//!   `min_refresh_seconds` after the last fetch, so that tokens with made-up key ids cannot
//!   make it fetch more often than that. Such a token is refused; the provider's retry finds
//!   the new key.
//!
//! The schedule is a pure function of the instants it is given; the task reads them from an
//! injected [`Clock`], so that tests move time by hand, and reports what it did in a
//! [`Progress`] that tests wait on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use shipfeed::auth::jwt::{KeySet, KeySource};
use shipfeed_store::Clock;
use tokio::sync::{watch, Notify};

use crate::config::KeyLocation;
use crate::metrics::{Metrics, Refresh};

/// The largest key set document read (real ones are a few kilobytes).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How long one fetch may take.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// When to fetch a key set: a pure state machine over the instants it is given.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    /// Between two successful fetches.
    every: TimeDelta,
    /// The least time between two fetches (and the first retry delay).
    least: TimeDelta,
    last_attempt: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    failures: u32,
    /// A token named an unknown key since the last attempt.
    unknown_key: bool,
}

impl Schedule {
    /// A schedule fetching every `every`, never twice within `least`; `loaded_at` when a set
    /// is already in use (a file read before the start).
    pub(crate) fn new(
        every: TimeDelta,
        least: TimeDelta,
        loaded_at: Option<DateTime<Utc>>,
    ) -> Self {
        Schedule {
            every,
            least,
            last_attempt: loaded_at,
            last_success: loaded_at,
            failures: 0,
            unknown_key: false,
        }
    }

    /// When the next fetch is due; `None`: now (nothing was fetched yet).
    pub(crate) fn due(&self) -> Option<DateTime<Utc>> {
        let attempt = self.last_attempt?;
        let regular = if self.failures > 0 {
            let doubling = 2_i32.saturating_pow(self.failures.saturating_sub(1).min(16));
            attempt + (self.least * doubling).min(self.every)
        } else {
            self.last_success.unwrap_or(attempt) + self.every
        };
        Some(if self.unknown_key {
            regular.min(attempt + self.least)
        } else {
            regular
        })
    }

    /// Whether a fetch is due at `now`.
    pub(crate) fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.due().is_none_or(|due| now >= due)
    }

    /// A token named an unknown key at `now`. Answers whether the fetch it asks for must
    /// wait (rate-limited); asking again before the fetch changes nothing.
    pub(crate) fn unknown_key(&mut self, now: DateTime<Utc>) -> bool {
        if self.unknown_key {
            return false;
        }
        self.unknown_key = true;
        !self.is_due(now)
    }

    /// A fetch ended at `at`.
    pub(crate) fn attempted(&mut self, at: DateTime<Utc>, succeeded: bool) {
        self.last_attempt = Some(at);
        self.unknown_key = false;
        if succeeded {
            self.last_success = Some(at);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
    }
}

/// What an endpoint's refresh task has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Key sets loaded (and put in use).
    pub(crate) loaded: u64,
    /// Fetches that failed (the keys in use stayed).
    pub(crate) failed: u64,
    /// Unknown-key fetches that had to wait for the minimum interval.
    pub(crate) rate_limited: u64,
}

/// One JWT endpoint's key set: what its verifier reads ([`KeySource`]), what its refresh
/// task replaces.
pub(crate) struct EndpointKeys {
    endpoint: String,
    location: KeyLocation,
    keys: RwLock<Arc<KeySet>>,
    /// A token named an unknown key since the task last looked.
    wanted: AtomicBool,
    wake: Notify,
    progress: watch::Sender<Progress>,
}

impl std::fmt::Debug for EndpointKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointKeys")
            .field("endpoint", &self.endpoint)
            .field("location", &self.location.to_string())
            .field("keys", &self.keys())
            .finish()
    }
}

impl KeySource for EndpointKeys {
    fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Wakes the refresh task; never waits, never fetches.
    fn unknown_key(&self, _kid: &str) {
        self.wanted.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// Reads and parses a key set; the message says why not.
fn parse(bytes: &[u8]) -> Result<KeySet, String> {
    let keys = KeySet::from_json(bytes).map_err(|e| e.message().to_owned())?;
    if keys.is_empty() {
        return Err(format!(
            "the key set has no usable key (RSA for RS256 or P-256 for ES256; {} skipped)",
            keys.skipped()
        ));
    }
    Ok(keys)
}

/// Reads a key set file now (before the service starts).
pub(crate) fn read_file(path: &Path) -> Result<KeySet, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    parse(&bytes)
}

impl EndpointKeys {
    /// The key set of `endpoint` at `location`, holding `keys` until the first refresh.
    pub(crate) fn new(endpoint: &str, location: KeyLocation, keys: KeySet) -> Arc<Self> {
        Arc::new(EndpointKeys {
            endpoint: endpoint.to_owned(),
            location,
            keys: RwLock::new(Arc::new(keys)),
            wanted: AtomicBool::new(false),
            wake: Notify::new(),
            progress: watch::Sender::new(Progress::default()),
        })
    }

    /// What the refresh task has done, as it changes (tests wait on it; the service reads
    /// the same from its metrics).
    #[cfg(test)]
    pub(crate) fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    fn replace(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    /// Fetches the key set once.
    async fn fetch(&self, client: &reqwest::Client) -> Result<KeySet, String> {
        match &self.location {
            KeyLocation::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("read {}: {e}", path.display()))?;
                parse(&bytes)
            }
            KeyLocation::Url(url) => {
                let described = |e: reqwest::Error| shipfeed::error_chain(&e.without_url());
                let mut response = client
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(described)?;
                if !response.status().is_success() {
                    return Err(format!("HTTP {}", response.status()));
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(described)? {
                    if body.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err("the key set document is larger than 1 MiB".to_owned());
                    }
                    body.extend_from_slice(&chunk);
                }
                parse(&body)
            }
        }
    }

    /// Keeps the key set fresh (see the module documentation) until `shutdown` turns true.
    pub(crate) async fn refresh(
        self: Arc<Self>,
        mut schedule: Schedule,
        client: reqwest::Client,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let endpoint = self.endpoint.as_str();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = clock.now();
            if self.wanted.swap(false, Ordering::SeqCst) && schedule.unknown_key(now) {
                metrics.jwks_refresh(endpoint, Refresh::RateLimited);
                self.progress.send_modify(|p| p.rate_limited += 1);
                tracing::info!(
                    endpoint,
                    "a token named an unknown key id; the key set is fetched again once the minimum interval since the last fetch has passed"
                );
            }
            if schedule.is_due(now) {
                let fetched = tokio::select! {
                    fetched = self.fetch(&client) => fetched,
                    _ = shutdown.changed() => return,
                };
                let loaded = fetched.is_ok();
                match fetched {
                    Ok(keys) => {
                        let kids: Vec<&str> = keys.kids().collect();
                        tracing::info!(
                            endpoint,
                            keys = keys.len(),
                            skipped = keys.skipped(),
                            kids = %kids.join(","),
                            "key set loaded"
                        );
                        metrics.jwks_keys(endpoint, keys.len());
                        self.replace(keys);
                        metrics.jwks_refresh(endpoint, Refresh::Loaded);
                        self.progress.send_modify(|p| p.loaded += 1);
                    }
                    Err(reason) => {
                        tracing::warn!(
                            endpoint,
                            location = %self.location,
                            %reason,
                            "key set not loaded; the keys in use stay"
                        );
                        metrics.jwks_refresh(endpoint, Refresh::Failed);
                        self.progress.send_modify(|p| p.failed += 1);
                    }
                }
                schedule.attempted(clock.now(), loaded);
                continue;
            }
            let wait = schedule
                .due()
                .and_then(|due| (due - now).to_std().ok())
                .unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The HTTP client of the key set fetches: rustls with the webpki roots, a timeout, few
/// redirects.
///
/// # Errors
/// When the TLS backend cannot be set up.
pub(crate) fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("shipfeed/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::{json, Value};
    use shipfeed::auth::jwt::{JwtPolicy, JwtVerifier};
    use shipfeed::{ErrorKind, Headers};
    use shipfeed_store::ManualClock;
    use shipfeed_testkit::jwt::{jwks, JwksServer, TestKey};

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
    }

    #[test]
    fn the_schedule_fetches_at_start_on_time_after_failures_and_for_unknown_keys_rate_limited() {
        let (every, least) = (TimeDelta::seconds(3600), TimeDelta::seconds(60));
        let mut schedule = Schedule::new(every, least, None);
        assert!(schedule.is_due(at(0)), "nothing loaded: at once");
        schedule.attempted(at(0), true);
        assert_eq!(schedule.due(), Some(at(3600)));
        // An unknown key 10 s after the fetch waits until 60 s after it.
        assert!(schedule.unknown_key(at(10)), "rate-limited");
        assert!(!schedule.unknown_key(at(20)), "asked once");
        assert_eq!(schedule.due(), Some(at(60)));
        assert!(!schedule.is_due(at(59)) && schedule.is_due(at(60)));
        schedule.attempted(at(60), true);
        assert_eq!(
            schedule.due(),
            Some(at(3660)),
            "back to the regular interval"
        );
        // Long after the last fetch, an unknown key fetches at once.
        assert!(!schedule.unknown_key(at(200)), "not rate-limited");
        assert!(schedule.is_due(at(200)));
        // Failures retry from the minimum interval, doubling, capped at the interval.
        schedule.attempted(at(200), false);
        assert_eq!(schedule.due(), Some(at(260)));
        schedule.attempted(at(260), false);
        assert_eq!(schedule.due(), Some(at(380)));
        for _ in 0..20 {
            schedule.attempted(at(1000), false);
        }
        assert_eq!(schedule.due(), Some(at(4600)));
        schedule.attempted(at(5000), true);
        assert_eq!(schedule.due(), Some(at(8600)));
        // A file read before the start counts as a fetch.
        let loaded = Schedule::new(every, least, Some(at(0)));
        assert!(!loaded.is_due(at(1)));
    }

    /// Waits (with a deadline, never a fixed sleep) until the progress satisfies `done`.
    async fn until(
        progress: &mut watch::Receiver<Progress>,
        done: impl Fn(&Progress) -> bool,
    ) -> Progress {
        let waited =
            tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|p| done(p))).await;
        *waited
            .expect("the refresh task did not get there within 30 s")
            .expect("the refresh task stopped")
    }

    fn claims(now: i64) -> Value {
        json!({"aud": "a", "iss": "i", "exp": now + 300})
    }

    fn bearer(token: &str) -> Headers {
        [("Authorization", format!("Bearer {token}"))]
            .into_iter()
            .collect()
    }

    #[tokio::test]
    async fn unknown_kids_refresh_in_the_background_rate_limited_by_the_clock() {
        let (old, new) = (TestKey::ec("old"), TestKey::ec("new"));
        let server = JwksServer::start(jwks(&[&old])).await;
        let keys = EndpointKeys::new(
            "shipup-jwt",
            KeyLocation::Url(server.url.parse().unwrap()),
            KeySet::default(),
        );
        let verifier = JwtVerifier::new(
            JwtPolicy::new(["a"], ["i"]),
            Arc::clone(&keys) as Arc<dyn KeySource>,
        )
        .unwrap();
        let start = Utc::now();
        let clock = Arc::new(ManualClock::new(start));
        let (metrics, registry) = Metrics::new();
        let (stop, shutdown) = watch::channel(false);
        let mut progress = keys.progress();
        let task = tokio::spawn(Arc::clone(&keys).refresh(
            Schedule::new(TimeDelta::seconds(3600), TimeDelta::seconds(60), None),
            client().unwrap(),
            Arc::clone(&clock) as Arc<dyn Clock>,
            metrics,
            shutdown,
        ));
        // The start fetch.
        until(&mut progress, |p| p.loaded == 1).await;
        let now = start.timestamp();
        verifier
            .verify(&bearer(&old.sign(&claims(now))), start)
            .unwrap();

        // The provider rotates: its set now has the new key, and a token signed with it
        // arrives 10 s after the fetch. Refused (no fetch on the request path), and the fetch
        // it asks for waits for the minimum interval.
        server.serve(200, jwks(&[&old, &new]));
        clock.advance(TimeDelta::seconds(10));
        let token = new.sign(&claims(now));
        let refused = verifier.verify(&bearer(&token), start).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::InvalidSignature);
        assert!(
            refused.message().contains("unknown key id `new`"),
            "{refused}"
        );
        let seen = until(&mut progress, |p| p.rate_limited == 1).await;
        assert_eq!((seen.loaded, server.hits()), (1, 1), "nothing fetched yet");
        // More such tokens do not make it fetch sooner.
        for _ in 0..5 {
            assert!(verifier.verify(&bearer(&token), start).is_err());
        }
        // Past the minimum interval, the next one fetches, and the retry passes.
        clock.advance(TimeDelta::seconds(51));
        assert!(verifier.verify(&bearer(&token), start).is_err());
        until(&mut progress, |p| p.loaded == 2).await;
        assert_eq!(server.hits(), 2);
        verifier.verify(&bearer(&token), start).unwrap();
        verifier
            .verify(&bearer(&old.sign(&claims(now))), start)
            .unwrap();

        // A failed fetch keeps the keys in use.
        server.serve(500, json!({}));
        clock.advance(TimeDelta::seconds(3600));
        keys.unknown_key("retry");
        until(&mut progress, |p| p.failed == 1).await;
        verifier.verify(&bearer(&token), start).unwrap();
        // So does a document without a usable key (an HMAC secret is not one).
        server.serve(
            200,
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "new"}]}),
        );
        clock.advance(TimeDelta::seconds(3600));
        keys.unknown_key("retry");
        until(&mut progress, |p| p.failed == 2).await;
        verifier.verify(&bearer(&token), start).unwrap();

        let text = crate::metrics::render(&registry);
        for series in [
            r#"shipfeed_jwks_refreshes_total{endpoint="shipup-jwt",outcome="loaded"} 2"#,
            r#"shipfeed_jwks_refreshes_total{endpoint="shipup-jwt",outcome="rate_limited"} 1"#,
            r#"shipfeed_jwks_refreshes_total{endpoint="shipup-jwt",outcome="failed"} 2"#,
            r#"shipfeed_jwks_keys{endpoint="shipup-jwt"} 2"#,
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_key_file_is_read_again_on_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (first, second) = (TestKey::rsa("2024"), TestKey::ec("2025"));
        std::fs::write(&path, jwks(&[&first]).to_string()).unwrap();
        let keys = EndpointKeys::new(
            "file",
            KeyLocation::File(path.clone()),
            read_file(&path).unwrap(),
        );
        assert_eq!(keys.keys().kids().collect::<Vec<_>>(), ["2024"]);
        assert!(read_file(&dir.path().join("missing.json"))
            .unwrap_err()
            .contains("missing.json"));
        std::fs::write(dir.path().join("empty.json"), r#"{"keys": []}"#).unwrap();
        assert!(read_file(&dir.path().join("empty.json"))
            .unwrap_err()
            .contains("no usable key"));

        let start = Utc::now();
        let clock = Arc::new(ManualClock::new(start));
        let (stop, shutdown) = watch::channel(false);
        let mut progress = keys.progress();
        let task = tokio::spawn(Arc::clone(&keys).refresh(
            Schedule::new(TimeDelta::seconds(600), TimeDelta::seconds(60), Some(start)),
            client().unwrap(),
            Arc::clone(&clock) as Arc<dyn Clock>,
            Metrics::new().0,
            shutdown,
        ));
        std::fs::write(&path, jwks(&[&first, &second]).to_string()).unwrap();
        clock.advance(TimeDelta::seconds(600));
        // The task sleeps on its own; a wake-up makes it look at the (moved) clock now.
        keys.unknown_key("2025");
        until(&mut progress, |p| p.loaded == 1).await;
        assert_eq!(keys.keys().kids().collect::<Vec<_>>(), ["2024", "2025"]);
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the task stops on shutdown")
            .unwrap();
    }
}
