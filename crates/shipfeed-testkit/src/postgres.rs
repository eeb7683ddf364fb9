//! A private schema per test on the test PostgreSQL server (feature `postgres`): the tests
//! of every crate that stores into PostgreSQL share it.
#![allow(clippy::unwrap_used)] // test support: a panic is the failing test's report

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::{Client, NoTls};

/// The server the tests use unless `SHIPFEED_TEST_POSTGRES_URL` says otherwise.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test server's URL.
pub fn base_url() -> String {
    std::env::var("SHIPFEED_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A plain client on the test server; fails the test loudly when the server is not up.
pub async fn admin() -> Client {
    let url = base_url();
    let (client, connection) = match tokio_postgres::connect(&url, NoTls).await {
        Ok(pair) => pair,
        Err(error) => panic!(
            "\n\nPostgreSQL is not reachable at {url}: {error} ({:?})\n\
             The PostgreSQL store tests need a running server. Start the local one with\n\
             \n    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
             \n(and create the database once: createdb -h 127.0.0.1 -U postgres test),\n\
             or point SHIPFEED_TEST_POSTGRES_URL at another server.\n",
            std::error::Error::source(&error).map(ToString::to_string)
        ),
    };
    tokio::spawn(connection);
    client
}

fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", hasher.finish())
}

/// The URL of the test server with `search_path` set to `schema`.
pub fn url_with_search_path(base: &str, schema: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-csearch_path%3D{schema}")
}

/// A fresh schema `shipfeed_t_<random>`, dropped with everything in it on drop.
pub struct Schema {
    /// The schema's name.
    pub name: String,
    /// The test server's URL with `search_path` set to the schema.
    pub url: String,
}

impl Schema {
    /// Creates the schema (panics, failing the test, when the server is down).
    pub async fn create() -> Schema {
        let name = format!("shipfeed_t_{}", random_suffix());
        admin()
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE SCHEMA {name}: {e:?}"));
        let url = url_with_search_path(&base_url(), &name);
        Schema { name, url }
    }

    /// A client whose search path is this schema, to look at the tables directly.
    pub async fn client(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime (or while a test panics): use a thread of its own,
        // and give up (leaving the schema behind) rather than hang the test run.
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = runtime.map_err(|e| e.to_string()).and_then(|runtime| {
                runtime.block_on(async {
                    let (client, connection) = tokio_postgres::connect(&base_url(), NoTls)
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                        ))
                        .await
                        .map_err(|e| format!("{e:?}"))
                })
            });
            let _ = done.send(result);
        });
        match dropped.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("warning: test schema {} not dropped: {error}", self.name)
            }
            Err(_) => eprintln!("warning: test schema {} not dropped in time", self.name),
        }
    }
}
