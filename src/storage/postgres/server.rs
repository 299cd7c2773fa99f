//! A throwaway PostgreSQL server: `initdb` into a temporary directory, `pg_ctl start` on a free
//! loopback port, `pg_ctl stop -m immediate` and the directory removed when dropped. The tests of the
//! PostgreSQL backend (unit and integration) run against it. When the process runs as root (CI
//! containers), the server runs as the `postgres` user, since PostgreSQL refuses to run as root.
//!
//! `.ci/run` installs Debian's `postgresql-15` where `initdb` is missing; the binaries are looked
//! up on `PATH`, then under `/usr/lib/postgresql/<version>/bin`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum PgServerError {
    #[error("PostgreSQL's initdb is not installed (Debian: apt-get install postgresql-15)")]
    NotInstalled,
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create database {name}")]
    Database {
        name: String,
        #[source]
        source: super::ConnectError,
    },
}

pub struct PgServer {
    dir: PathBuf,
    /// The directory of the server binaries; empty when they are on `PATH`.
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn find_bin() -> Result<PathBuf, PgServerError> {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("initdb").exists() && d.join("pg_ctl").exists()));
    if on_path {
        return Ok(PathBuf::new());
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().ok_or(PgServerError::NotInstalled)
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> PgServerError + '_ {
    move |source| PgServerError::Io { what: what.to_owned(), source }
}

impl PgServer {
    /// Starts a fresh server whose superuser is `vadyl`, trusted on loopback.
    pub fn start() -> Result<Self, PgServerError> {
        Self::start_with(None)
    }

    /// Starts a fresh server that takes TLS connections only on loopback, with this certificate
    /// (PEM) and key.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<Self, PgServerError> {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<Self, PgServerError> {
        let bin = find_bin()?;
        let dir = std::env::temp_dir().join(format!("vadyl-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(io("create the server's directory"))?;
        let uid = Command::new("id").arg("-u").output().map_err(io("run id -u"))?;
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io("find a free port"))?
            .port();
        let server = Self { dir, bin, port, as_postgres };
        if as_postgres {
            let out = Command::new("chown").arg("postgres:postgres").arg(&server.dir).output();
            check("chown the server's directory to postgres", out)?;
        }
        let data = server.dir.join("data").display().to_string();
        let log = server.dir.join("log").display().to_string();
        server.run("initdb", &["-D", &data, "-A", "trust", "-U", "vadyl", "--no-sync", "-E", "UTF8", "--locale=C"])?;
        // Tests kill registry nodes, never the database server: fsync off keeps them fast.
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            server.dir.display()
        );
        if let Some((cert, key)) = tls {
            options.push_str(&server.enable_tls(cert, key)?);
        }
        server.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-o", &options, "start"])?;
        Ok(server)
    }

    /// Writes the certificate and key into the data directory and a `pg_hba.conf` that refuses
    /// loopback connections without TLS; returns the server options that turn TLS on.
    fn enable_tls(&self, cert: &str, key: &str) -> Result<String, PgServerError> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.dir.join("data");
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n";
        for (name, text, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600), ("pg_hba.conf", hba, 0o600)]
        {
            let path = data.join(name);
            std::fs::write(&path, text).map_err(io("write the server's TLS files"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(io("set the server's TLS files' modes"))?;
            if self.as_postgres {
                check(
                    "chown a TLS file to postgres",
                    Command::new("chown").arg("postgres:postgres").arg(&path).output(),
                )?;
            }
        }
        Ok(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into())
    }

    fn command(&self, tool: &str) -> Command {
        let program = if self.bin.as_os_str().is_empty() { PathBuf::from(tool) } else { self.bin.join(tool) };
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), PgServerError> {
        check(&format!("{tool} {}", args.join(" ")), self.command(tool).args(args).output())
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://vadyl@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` (letters, digits and `_`) and returns its URL.
    pub fn database(&self, name: &str) -> Result<String, PgServerError> {
        let failed = |source| PgServerError::Database { name: name.to_owned(), source };
        let mut admin = crate::storage::postgres::connect(&self.url("postgres")).map_err(failed)?;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).map_err(|e| failed(e.into()))?;
        Ok(self.url(name))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn check(what: &str, out: std::io::Result<std::process::Output>) -> Result<(), PgServerError> {
    let out = out.map_err(|source| PgServerError::Io { what: format!("run {what}"), source })?;
    if out.status.success() {
        return Ok(());
    }
    Err(PgServerError::Failed {
        what: what.to_owned(),
        detail: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    })
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.command("pg_ctl").arg("-D").arg(&data).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
