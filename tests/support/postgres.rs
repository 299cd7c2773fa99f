//! A real PostgreSQL server for one test: `initdb` into a temporary directory, `pg_ctl start` on a
//! free loopback port, `pg_ctl stop -m immediate` when dropped. When the process runs as root (CI
//! containers), the server runs as the `postgres` user, which PostgreSQL requires.
//!
//! `.ci/run` installs Debian's `postgresql-15` where `initdb` is missing; the binaries are looked
//! up on `PATH`, then under `/usr/lib/postgresql/<version>/bin`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn find_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("initdb")).any(|f| f.exists()))
        .unwrap_or(false);
    if on_path {
        return PathBuf::new();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().expect("PostgreSQL's initdb is installed (Debian: apt-get install postgresql-15)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl PgServer {
    pub fn start() -> Self {
        let bin = find_bin();
        let root = std::env::temp_dir().join(format!("vadyl-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).expect("the server's directory is created");
        // PostgreSQL refuses to run as root.
        let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let as_postgres = uid.is_ok_and(|u| u == "0");
        if as_postgres {
            let ok = Command::new("chown").arg("postgres:postgres").arg(&root).status().map(|s| s.success());
            assert_eq!(ok.ok(), Some(true), "chown of the server's directory to postgres");
        }
        let port = free_port();
        let server = Self { dir: root, bin, port, as_postgres };
        let data = server.dir.join("data");
        let data_s = data.to_str().expect("a UTF-8 temp path").to_owned();
        server.run("initdb", &["-D", &data_s, "-A", "trust", "-U", "vadyl", "--no-sync", "-E", "UTF8", "--locale=C"]);
        let log = server.dir.join("log");
        // The tests kill registry nodes, never the database server: fsync off keeps them fast.
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            server.dir.display()
        );
        server.run("pg_ctl", &["-D", &data_s, "-l", log.to_str().unwrap_or("log"), "-w", "-o", &options, "start"]);
        server
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = if self.bin.as_os_str().is_empty() { PathBuf::from(tool) } else { self.bin.join(tool) };
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).output().unwrap_or_else(|e| panic!("{} runs: {e}", program.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://vadyl@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).expect("connect as vadyl");
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).expect("create the database");
        self.url(name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let program = if self.bin.as_os_str().is_empty() { PathBuf::from("pg_ctl") } else { self.bin.join("pg_ctl") };
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = cmd.arg("-D").arg(&data).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
