//! A real InfluxDB 1.x (`influxd`, installed by
//! `scripts/install-test-servers.sh`) on loopback ports, in a temporary
//! directory, stopped with the test (`alumet::testing::peer`); queried
//! over its HTTP API.
#![allow(clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alumet::testing::peer::ChildProcess;

use super::{encode, free_port, http};

fn influxd_binary() -> PathBuf {
    super::find_binary("influxd").unwrap_or_else(|| {
        panic!("`influxd` is not installed: run scripts/install-test-servers.sh (as root)")
    })
}

/// A running `influxd` with database `db`.
pub struct Influxd {
    _process: ChildProcess,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    db: String,
    dir: tempfile::TempDir,
}

impl Influxd {
    /// Starts it and creates `db`.
    pub fn start(db: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path();
        let log = std::fs::File::create(d.join("influxd.log")).unwrap();
        let child = Command::new(influxd_binary())
            .args(["-config", "/dev/null"])
            .env("INFLUXDB_HTTP_BIND_ADDRESS", format!("127.0.0.1:{port}"))
            .env(
                "INFLUXDB_BIND_ADDRESS",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("INFLUXDB_META_DIR", d.join("meta"))
            .env("INFLUXDB_DATA_DIR", d.join("data"))
            .env("INFLUXDB_DATA_WAL_DIR", d.join("wal"))
            .env("INFLUXDB_REPORTING_DISABLED", "true")
            .env("INFLUXDB_HTTP_LOG_ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Self {
            _process: ChildProcess::new(child),
            port,
            db: db.to_owned(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !matches!(http(port, "GET", "/ping"), Some((204, _))) {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(server.dir.path().join("influxd.log"));
                panic!("influxd did not start: {log:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let create = format!("/query?q={}", encode(&format!("CREATE DATABASE {db}")));
        assert_eq!(http(port, "POST", &create).map(|r| r.0), Some(200));
        server
    }

    /// The answer to InfluxQL query `q`, timestamps in ns.
    pub fn query(&self, q: &str) -> serde_json::Value {
        let path = format!("/query?db={}&epoch=ns&q={}", self.db, encode(q));
        let (status, body) = http(self.port, "GET", &path).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Number of points per measurement.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let answer = self.query("SELECT count(value) FROM /.*/");
        let mut counts = BTreeMap::new();
        if let Some(series) = answer["results"][0]["series"].as_array() {
            for s in series {
                let n = s["values"][0][1].as_u64().unwrap();
                counts.insert(s["name"].as_str().unwrap().to_owned(), n);
            }
        }
        counts
    }
}
