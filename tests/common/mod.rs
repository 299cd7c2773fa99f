//! Shared test support: run the real binary, start a real server on a loopback port, and seed a
//! registry through its own command handlers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use vadyl::app::registry::OpenOptions;
use vadyl::app::App;
use vadyl::commands::{self, BuildDecision};
use vadyl::events::domain::{CheckResult, CheckState, ConformanceRunCompleted, ImplementationBuilt};
use vadyl::events::envelope::EventMetadata;
use vadyl::ids::{BindingTarget, ContentHash, ImplementationId, ImplementationSource};
use vadyl::keys::Signer;

/// The one switch that runs the suite on PostgreSQL: `VADYL_TEST_POSTGRES` set to the URL of a
/// server whose role may create databases (e.g. `postgres://vadyl@127.0.0.1:55432/postgres`). Each
/// data directory then gets a database of its own, named after its path, and every command, server
/// and in-process registry of the test uses it (`--store`); unset, everything stays in the data
/// directory (SQLite), as for a user.
pub fn database_for(data_dir: &Path) -> Option<String> {
    let (mut admin, name) = test_database(data_dir)?;
    let exists = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).expect("pg_database reads");
    if exists.is_none() {
        // Two processes of one test may race to create it: losing the race is fine.
        let _ = admin.batch_execute(&format!("CREATE DATABASE {name}"));
    }
    Some(database_url(&name))
}

/// A connection to the suite's server and the name of `data_dir`'s database, when the suite runs on
/// PostgreSQL.
fn test_database(data_dir: &Path) -> Option<(postgres::Client, String)> {
    let admin = std::env::var("VADYL_TEST_POSTGRES").ok().filter(|u| !u.is_empty())?;
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    let name = format!("t_{:016x}", h.finish());
    let client = postgres::Client::connect(&admin, postgres::NoTls).expect("the test database server answers");
    Some((client, name))
}

fn database_url(name: &str) -> String {
    let admin = std::env::var("VADYL_TEST_POSTGRES").expect("the suite runs on PostgreSQL");
    let mut url = url::Url::parse(&admin).expect("VADYL_TEST_POSTGRES is a URL");
    url.set_path(name);
    url.to_string()
}

/// Where the registry of `data_dir` keeps its stores in this run of the suite.
pub fn location(data_dir: &Path) -> vadyl::storage::Location {
    vadyl::storage::Location { database: database_for(data_dir), ..vadyl::storage::Location::dir(data_dir) }
}

/// A copy of everything the registry of `from` keeps, as the registry of `to`: its data directory,
/// and its database when the suite runs on PostgreSQL. Nothing may have touched `to` yet.
pub fn copy_registry(from: &Path, to: &Path) {
    copy_dir(from, to);
    if let Some((mut admin, source)) = test_database(from) {
        let (_, target) = test_database(to).expect("the suite runs on PostgreSQL");
        admin.batch_execute(&format!("CREATE DATABASE {target} TEMPLATE {source}")).expect("the database is copied");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("the copy's directory is created");
    for entry in std::fs::read_dir(from).expect("the directory reads") {
        let entry = entry.expect("the entry reads");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("the entry's type reads").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("the file is copied");
        }
    }
}

/// The database behind a data directory, reached the way an operator or an attacker with direct
/// access would (the `sqlite3` command, a PostgreSQL session), never through vadyl: the tests that
/// tamper with stored history use it to get past the append-only guards.
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    pub fn of(data_dir: &Path) -> Self {
        match database_for(data_dir) {
            Some(url) => Self::Postgres(url),
            None => Self::Sqlite(data_dir.join("events.db")),
        }
    }

    /// Runs `sql` (statements separated by `;`); what the database said when it refused.
    pub fn run(&self, sql: &str) -> Result<(), String> {
        match self {
            Self::Sqlite(db) => {
                let out = Command::new("sqlite3").arg(db).arg(sql).output().expect("the sqlite3 command runs");
                if out.status.success() {
                    Ok(())
                } else {
                    Err(stderr(&out))
                }
            }
            Self::Postgres(url) => postgres::Client::connect(url, postgres::NoTls)
                .expect("the test database answers")
                .batch_execute(sql)
                .map_err(|e| e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned())),
        }
    }

    /// The log's head position.
    pub fn head(&self) -> i64 {
        let sql = "SELECT COALESCE(MAX(position), 0) FROM events";
        match self {
            Self::Sqlite(db) => {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = rusqlite::Connection::open_with_flags(db, flags).expect("the log opens");
                conn.query_row(sql, [], |r| r.get(0)).expect("the head reads")
            }
            Self::Postgres(url) => {
                let mut client = postgres::Client::connect(url, postgres::NoTls).expect("the test database answers");
                client.query_one(sql, &[]).expect("the head reads").get(0)
            }
        }
    }

    /// The statement that removes the guard refusing UPDATE on `table` (`events`, `merkle_tiles`,
    /// `artifacts`), as someone who owns the database may.
    pub fn lift_update_guard(&self, table: &str) -> String {
        match self {
            Self::Sqlite(_) => format!("DROP TRIGGER {table}_refuse_update;"),
            Self::Postgres(_) => format!("ALTER TABLE {table} DISABLE TRIGGER {table}_append_only;"),
        }
    }

    /// Thirty-two zero bytes, in this database's SQL.
    pub fn zero32(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "zeroblob(32)",
            Self::Postgres(_) => "decode(repeat('00', 32), 'hex')",
        }
    }

    /// Every value of every table but the encrypted secrets, as bytes, named `table.column`: what a
    /// database holds beyond the data directory's files. Nothing for SQLite (its files are read whole).
    fn every_value(&self) -> Vec<(String, Vec<u8>)> {
        let Self::Postgres(url) = self else { return Vec::new() };
        let mut client = postgres::Client::connect(url, postgres::NoTls).expect("the test database answers");
        let columns = client
            .query(
                "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name <> 'secrets'",
                &[],
            )
            .expect("the columns are listed");
        let mut out = Vec::new();
        for column in columns {
            let (table, name, kind): (String, String, String) = (column.get(0), column.get(1), column.get(2));
            let value =
                if kind == "bytea" { format!("\"{name}\"") } else { format!("convert_to(\"{name}\"::text, 'UTF8')") };
            for row in client.query(&format!("SELECT {value} FROM \"{table}\""), &[]).expect("the column reads") {
                if let Some(bytes) = row.get::<_, Option<Vec<u8>>>(0) {
                    out.push((format!("{table}.{name}"), bytes));
                }
            }
        }
        out
    }

    /// Flips the middle byte of one stored WebAssembly artifact, behind the registry's back.
    pub fn flip_a_component_byte(&self, data_dir: &Path) {
        match self {
            Self::Sqlite(_) => {
                let artifact = files_under(&data_dir.join("artifacts"))
                    .into_iter()
                    .find(|(_, bytes)| bytes.starts_with(b"\0asm"))
                    .map(|(path, _)| PathBuf::from(path))
                    .expect("a component is stored");
                let mut bytes = std::fs::read(&artifact).expect("the artifact reads");
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x01;
                std::fs::write(&artifact, &bytes).expect("the artifact is rewritten");
            }
            Self::Postgres(_) => {
                let sql = format!(
                    "{} UPDATE artifacts SET bytes = set_byte(bytes, length(bytes) / 2, get_byte(bytes, length(bytes) / 2) # 1) \
                     WHERE hash = (SELECT hash FROM artifacts WHERE substring(bytes FROM 1 FOR 4) = '\\x0061736d'::bytea \
                     ORDER BY hash LIMIT 1)",
                    self.lift_update_guard("artifacts")
                );
                self.run(&sql).expect("the artifact is rewritten");
            }
        }
    }
}

/// `--store URL` for `data_dir` when the suite runs on PostgreSQL ([`database_for`]), else nothing.
pub fn store_args(data_dir: &Path) -> Vec<String> {
    database_for(data_dir).map(|url| vec!["--store".to_owned(), url]).unwrap_or_default()
}

pub fn vadyl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vadyl"))
}

/// `vadyl --data-dir DIR args…`, with the output captured.
pub fn vadyl(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(vadyl_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(store_args(data_dir))
        .args(args)
        .env_remove("VADYL_SERVER")
        .output()
        .expect("the vadyl binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `vadyl serve` process on an ephemeral loopback port; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// The admin token `vadyl serve` wrote on first start; every helper request sends it.
    pub token: String,
}

impl Server {
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// `vadyl serve` with extra options (e.g. `--max-concurrent 4`).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_global(data_dir, &[], extra)
    }

    /// `vadyl <global options> serve <extra>`: global options such as `--store URL`.
    pub fn start_global(data_dir: &Path, global: &[&str], extra: &[&str]) -> Self {
        let mut child = Command::new(vadyl_bin())
            .arg("--data-dir")
            .arg(data_dir)
            .args(if global.contains(&"--store") { Vec::new() } else { store_args(data_dir) })
            .args(global)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("vadyl serve starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("the server prints its address");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        let token =
            std::fs::read_to_string(data_dir.join("admin.token")).map(|t| t.trim().to_owned()).unwrap_or_default();
        Self { child, base, token }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/Connector{path}", self.base)
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::blocking::Client::new()
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .expect("GET reaches the server");
        read(r)
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = reqwest::blocking::Client::new()
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .expect("POST reaches the server");
        read(r)
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: &str) -> (u16, serde_json::Value, String) {
        let r = reqwest::blocking::Client::new()
            .post(self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .expect("POST reaches the server");
        let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
        let (status, v) = read(r);
        (status, v, ct)
    }

    /// Stops the server the way an operator does (SIGTERM), so it checkpoints and snapshots.
    pub fn stop(mut self) {
        #[cfg(unix)]
        unsafe_free_sigterm(self.child.id());
        let _ = self.child.wait();
    }
}

#[cfg(unix)]
fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(r: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// A registry (in `<tempdir>/data`) with the native webhook adapter built as `hooks:1.0.0`, passed
/// through conformance and bound as `hooks` in the projects `shop` and `rival`, all through the CLI.
pub fn hooks_in_two_projects() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    for args in [
        vec!["connector", "build", "native", "--adapter", "vadyl.webhook-hmac", "--implementation", "hooks:1.0.0"],
        vec!["connector", "conformance", "run", "--implementation", "hooks:1.0.0"],
        vec!["connector", "binding", "create", "hooks", "--implementation", "hooks:1.0.0", "--project", "shop"],
        vec!["connector", "binding", "create", "hooks", "--implementation", "hooks:1.0.0", "--project", "rival"],
    ] {
        vadyl_ok(&data, &args);
    }
    (dir, data)
}

pub fn open(data_dir: &Path) -> App {
    vadyl::storage::open_at(&location(data_dir), OpenOptions::default(), vadyl::storage::sqlite::log::Durability::Full)
        .expect("the registry opens")
}

pub fn actor(name: &str) -> EventMetadata {
    EventMetadata::actor(name)
}

/// Records a build of `id` through the build command handler (what the build engines will call).
pub fn build(reg: &App, id: &str, contract: &str, source: ImplementationSource) -> ImplementationId {
    let id: ImplementationId = id.parse().unwrap();
    let bytes = format!("artifact bytes of {id}");
    let content_hash = ContentHash::of(bytes.as_bytes());
    let built = ImplementationBuilt {
        implementation_id: id.clone(),
        source,
        contract: contract.parse().unwrap(),
        content_hash,
        signature: reg.registry().key().sign(&vadyl::runtime::artifact::signing_message(&content_hash)),
        artifact_size: bytes.len() as u64,
        media_type: "application/octet-stream".into(),
    };
    reg.registry()
        .execute(&actor("test:builder"), |s| match commands::record_build(s, built.clone())? {
            BuildDecision::Created(events) => Ok(events),
            BuildDecision::AlreadyBuilt => Ok(vec![]),
        })
        .unwrap();
    id
}

/// Records a conformance run result through its command handler.
pub fn conformance(reg: &App, id: &ImplementationId, run_id: &str, passed: bool) {
    let imp = reg.registry().read(|s| s.implementation(id).cloned()).unwrap();
    let state = if passed { CheckState::Passed } else { CheckState::Failed };
    let run = ConformanceRunCompleted {
        run_id: run_id.into(),
        implementation_id: id.clone(),
        content_hash: imp.content_hash,
        contract: imp.contract,
        passed,
        checks: vec![CheckResult {
            id: "contract.shape".into(),
            state,
            detail: (!passed).then(|| "recorded by the test harness: output missing field id".into()),
        }],
        started_at: "2026-11-25T12:00:00Z".into(),
        finished_at: "2026-11-25T12:00:01Z".into(),
    };
    reg.registry()
        .execute(&actor("test:conformance"), |s| {
            commands::complete_conformance_run(s, run.clone(), reg.registry().key())
        })
        .unwrap();
}

/// Builds and admits `id`, creating the next publication version.
pub fn publish(reg: &App, id: &str, contract: &str) -> ImplementationId {
    let id = build(reg, id, contract, ImplementationSource::DeclarativeBundle);
    conformance(reg, &id, &format!("conf_{}", id.to_string().replace([':', '.'], "_")), true);
    id
}

pub fn bind(reg: &App, project: &str, alias: &str, target: &str) {
    let target: BindingTarget = target.parse().unwrap();
    reg.registry()
        .execute(&actor("test:project"), |s| {
            commands::bind(s, project.parse().unwrap(), alias.parse().unwrap(), target.clone())
        })
        .unwrap();
}

/// Stores real component bytes and records their build through the command handler, skipping the
/// build's own checks: how a test forces an artifact the build would refuse into the store.
pub fn build_with_bytes(reg: &App, id: &str, contract: &str, bytes: &[u8]) -> ImplementationId {
    let id: ImplementationId = id.parse().unwrap();
    let content_hash = reg.artifacts().put(bytes).unwrap();
    let built = ImplementationBuilt {
        implementation_id: id.clone(),
        source: ImplementationSource::AuthoredComponent,
        contract: contract.parse().unwrap(),
        content_hash,
        signature: reg.registry().key().sign(&vadyl::runtime::artifact::signing_message(&content_hash)),
        artifact_size: bytes.len() as u64,
        media_type: "application/wasm".into(),
    };
    reg.registry()
        .execute(&actor("test:forced"), |s| match commands::record_build(s, built.clone())? {
            BuildDecision::Created(events) => Ok(events),
            BuildDecision::AlreadyBuilt => Ok(vec![]),
        })
        .unwrap();
    id
}

/// `vadyl … args`, which must succeed; its stdout.
pub fn vadyl_ok(data_dir: &Path, args: &[&str]) -> String {
    let out = vadyl(data_dir, args);
    assert!(out.status.success(), "{args:?}: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// `vadyl secret set NAME` with the value on stdin; what the command printed.
pub fn set_secret(data_dir: &Path, name: &str, value: &str) -> String {
    set_secret_global(data_dir, &[], name, value)
}

/// [`set_secret`] with global options (e.g. `--store URL`).
pub fn set_secret_global(data_dir: &Path, global: &[&str], name: &str, value: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(vadyl_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(if global.contains(&"--store") { Vec::new() } else { store_args(data_dir) })
        .args(global)
        .args(["secret", "set", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("vadyl secret set starts");
    child.stdin.take().expect("stdin is piped").write_all(value.as_bytes()).expect("the value is written");
    let out = child.wait_with_output().expect("vadyl secret set ends");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// Every byte the registry of data directory `dir` keeps, in its files and its database, except the
/// encrypted secret store.
pub fn everything_stored(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Database::of(dir).every_value();
    out.extend(files_under(dir));
    out
}

/// Every file under `dir`, except the encrypted secret store.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("the directory reads") {
            let path = entry.expect("the entry reads").path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.display().to_string().contains("secrets.db") {
                out.push((path.display().to_string(), std::fs::read(&path).expect("the file reads")));
            }
        }
    }
    out
}

/// What a receiver got: each request's headers and body.
pub type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, String)>>>;

/// A webhook receiver on loopback (`POST /hook`) that records what it gets and answers after `delay`.
pub fn receiver(delay: std::time::Duration) -> (String, Deliveries) {
    let seen: Deliveries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let store = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                    let store = store.clone();
                    async move {
                        let h = headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        store.lock().unwrap_or_else(|p| p.into_inner()).push((h, body));
                        tokio::time::sleep(delay).await;
                        "received"
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("a loopback port");
            tx.send(listener.local_addr().expect("an address").port()).expect("the test waits");
            axum::serve(listener, app).await.expect("the receiver serves");
        });
    });
    let port = rx.recv().expect("the receiver started");
    (format!("http://127.0.0.1:{port}/hook"), seen)
}

/// Binds `count` aliases `<prefix>-<i>` in `project` to `target`, a thousand per append: how a
/// test gets a long log quickly.
pub fn bind_many(reg: &App, project: &str, prefix: &str, count: usize, target: &str) {
    let target: BindingTarget = target.parse().unwrap();
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        reg.registry()
            .execute(&actor("test:project"), |s| {
                let mut events = Vec::new();
                for i in chunk {
                    let alias = format!("{prefix}-{i}").parse().unwrap();
                    events.extend(commands::bind(s, project.parse().unwrap(), alias, target.clone())?);
                }
                Ok(events)
            })
            .unwrap();
    }
}
